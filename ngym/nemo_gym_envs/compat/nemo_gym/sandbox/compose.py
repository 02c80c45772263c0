"""`AsyncSandboxCompose`: NeMo Gym runs a task's docker-compose file as a group of sandboxes (terminal_bench_4's
multi-service tasks). ngym does not: the object is made (so a server that builds one starts), and starting it is
an error that says what it would need."""

from __future__ import annotations

from typing import Any, NoReturn

from .providers import SandboxCreateError


class AsyncSandboxCompose:
    def __init__(self, provider_config: Any, compose_path: Any = None, *args: Any, **options: Any) -> None:
        self.provider_config = provider_config
        self.compose_path = compose_path
        self.services: dict[str, Any] = {}
        self.project: str | None = None

    def _refuse(self) -> NoReturn:
        raise SandboxCreateError(
            f"docker-compose sandboxes ({self.compose_path}) cannot run here: ngym's nemo_gym does not implement "
            "them (they need a container provider and the services' images)"
        )

    async def start(self) -> AsyncSandboxCompose:
        self._refuse()

    async def serialize(self, *, scope: str | None = None) -> dict[str, Any]:
        self._refuse()

    @classmethod
    async def connect(cls, descriptor: Any, *, provider: Any) -> AsyncSandboxCompose:
        cls(provider)._refuse()

    async def stop(self) -> None:
        return None

    async def __aenter__(self) -> AsyncSandboxCompose:
        return await self.start()

    async def __aexit__(self, *_exc: Any) -> None:
        await self.stop()
