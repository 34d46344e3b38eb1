from tests.integration.world import world

__all__ = ["world"]
