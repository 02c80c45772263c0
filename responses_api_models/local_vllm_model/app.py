"""local_vllm_model: vllm_model in front of vLLM servers it starts itself, as part of ng_run.

Keys after NeMo Gym's local_vllm_model (`model`, `vllm_serve_kwargs`, `vllm_serve_env_vars`, `hf_home`; a
`base_url` means "use these servers, launch nothing"), plus what running vLLM as local processes needs: which
Python runs vLLM, how many instances, the start-up time limit, where the logs go. Every instance runs under a
watchdog (ngym.vllm.watchdog), so Ctrl-C, SIGTERM or kill -9 of ng_run leave no vLLM behind; on a GPU machine
the instances split the visible GPUs. Once they serve, everything is vllm_model's: sticky sessions over the
instances, failover, token data, the token-exact path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ngym.config.errors import ConfigError
from ngym.config.instances import RUN_DIR_KEY
from ngym.servers.base import ServerContext, StartupError
from ngym.vllm.fleet import InstancePlan, VllmFleet
from ngym.vllm.process import VLLM_PYTHON_ENV, VllmStartError
from ngym.vllm.serve_args import gpus_per_instance, serve_flags, split_gpus, visible_gpus
from responses_api_models.vllm_model.app import VllmModel, VllmModelConfig

CHECKOUT = Path(__file__).resolve().parents[2]
DEFAULT_VLLM_PYTHON = CHECKOUT / ".venv-vllm" / "bin" / "python"
PLACEHOLDER_URL = "http://127.0.0.1:1/v1"  # replaced by the launched servers' URLs before the first request
WATCH_INTERVAL_S = 2.0


class LocalVllmModelConfig(VllmModelConfig):
    base_url: str | list[str] | None = None  # type: ignore[assignment]  # set: serve from these, launch nothing
    hf_home: str | None = None
    vllm_serve_kwargs: dict[str, Any] = Field(default_factory=dict)
    vllm_serve_env_vars: dict[str, str] = Field(default_factory=dict)
    vllm_python: str | None = Field(default=None, description="the Python of vLLM's venv; default .venv-vllm")
    ray_worker_py_executable: str | None = None  # NeMo Gym's name for the Python that runs vLLM
    num_instances: int = Field(default=1, ge=1)
    vllm_startup_timeout_s: float = Field(default=1800.0, gt=0)
    log_dir: str | None = None
    show_vllm_engine_stats: bool = False
    debug: bool = False

    @field_validator("base_url")
    @classmethod
    def _check_base_urls(cls, value: str | list[str] | None) -> str | list[str] | None:  # type: ignore[override]
        return None if value is None else VllmModelConfig._check_base_urls(value)

    @model_validator(mode="after")
    def _check_launch(self) -> LocalVllmModelConfig:
        if self.vllm_python is not None and self.ray_worker_py_executable is not None:
            raise ValueError("set vllm_python or ray_worker_py_executable (the same thing), not both")
        if self.base_url is None:
            try:  # their errors, before anything starts
                serve_flags(self.vllm_serve_kwargs, "vllm_serve_kwargs")
                gpus_per_instance(self.vllm_serve_kwargs)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def launches(self) -> bool:
        return self.base_url is None

    @property
    def base_urls(self) -> list[str]:
        return [PLACEHOLDER_URL] * self.num_instances if self.base_url is None else super().base_urls

    @property
    def served_model_name(self) -> str:
        """The name vLLM serves the model under: `--served-model-name` if given, else `model` verbatim."""
        names = self.vllm_serve_kwargs.get("served_model_name")
        if isinstance(names, list) and names:
            return str(names[0])
        return str(names) if names else self.model


class LocalVllmModel(VllmModel):
    config_model = LocalVllmModelConfig

    @classmethod
    def startup_budget_s(cls, config: Any) -> float:
        return float(config.vllm_startup_timeout_s) if config.launches else 0.0

    def __init__(self, config: LocalVllmModelConfig, context: ServerContext) -> None:
        self.local = config
        # Requests name the model as vLLM serves it; `model` stays what vLLM loads.
        super().__init__(config.model_copy(update={"model": config.served_model_name}), context)
        self.fleet: VllmFleet | None = None
        self._watch: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        if self.local.launches:
            self.fleet = VllmFleet(self.plans(), self.say, self.local.vllm_startup_timeout_s)
            try:
                urls = await self.fleet.start()
            except VllmStartError as exc:
                raise StartupError(str(exc)) from None
            self.client.use(urls)
            self._watch = asyncio.create_task(self._watch_instances())
        await super().startup()

    async def shutdown(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        try:
            await super().shutdown()
        finally:
            if self.fleet is not None:
                await asyncio.to_thread(self.fleet.stop)

    def say(self, message: str) -> None:
        print(self.context.redact(message), file=sys.stderr, flush=True)

    def plans(self) -> list[InstancePlan]:
        config = self.local
        where = f"{self.context.instance_name}.vllm_serve_kwargs"
        flags = serve_flags(config.vllm_serve_kwargs, where)
        if not config.show_vllm_engine_stats and "disable_log_stats" not in config.vllm_serve_kwargs:
            flags.append("--disable-log-stats")
        try:
            devices = split_gpus(
                visible_gpus(), config.num_instances, gpus_per_instance(config.vllm_serve_kwargs), where
            )
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
        python = self._vllm_python()
        log_dir = self._log_dir()
        api_key = config.api_key.get_secret_value() if config.api_key is not None else None
        plans = []
        for index, visible in enumerate(devices):
            env = {**self._base_env(), **({"CUDA_VISIBLE_DEVICES": visible} if visible is not None else {})}
            log = log_dir / f"vllm-{index}.log"
            plan = InstancePlan(index, config.model, python, tuple(flags), log, env, api_key, config.served_model_name)
            plans.append(plan)
            if config.debug:
                shown = {k: v for k, v in env.items() if k != "HF_TOKEN"}
                self.say(f"vLLM {index}: {python} -m vllm.entrypoints.openai.api_server {' '.join(flags)}; env {shown}")
        return plans

    def _vllm_python(self) -> Path:
        chosen = self.local.vllm_python or self.local.ray_worker_py_executable or os.environ.get(VLLM_PYTHON_ENV)
        python = Path(chosen) if chosen else DEFAULT_VLLM_PYTHON
        if not python.is_file():
            key = "vllm_python" if chosen else f"vllm_python (default {DEFAULT_VLLM_PYTHON}; `make setup` makes it)"
            raise StartupError(f"{self.context.instance_name}.{key}: no Python at {python} to run vLLM with")
        return python

    def _log_dir(self) -> Path:
        if self.local.log_dir is not None:
            return Path(self.local.log_dir)
        run_dir = self.context.config.get(RUN_DIR_KEY)  # set by ng_run
        base = Path(run_dir) if run_dir else Path.cwd() / ".ngym" / "runs" / time.strftime("%Y%m%d-%H%M%S")
        return base / self.context.instance_name

    def _base_env(self) -> dict[str, str]:
        env = dict(self.local.vllm_serve_env_vars)
        if self.local.hf_home:
            env.setdefault("HF_HOME", self.local.hf_home)
        token = self.context.config.get("hf_token")
        if isinstance(token, str) and token:
            env.setdefault("HF_TOKEN", token)  # NeMo Gym's env.yaml key; vLLM downloads with it
        return env

    async def _watch_instances(self) -> None:
        """Report an instance that exits (the pool moves its sessions); when none is left, stop this server so
        that ng_run reports it and stops, rather than answering 502 forever."""
        assert self.fleet is not None
        reported: set[int] = set()
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            alive = self.fleet.alive()
            for index, running in enumerate(alive):
                if not running and index not in reported:
                    reported.add(index)
                    tail = self.fleet.servers[index].log_tail(2000)
                    self.say(f"vLLM {index} exited; the others take its sessions. Its log ends:\n{tail}")
            if not any(alive):
                self.say("every vLLM instance has exited; stopping")
                os.kill(os.getpid(), signal.SIGTERM)
                return
