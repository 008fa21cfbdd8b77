"""Option groups: functions whose parameters are options and whose result is a typed object.

A group's parameters are options declared in options.py, with defaults from config.py;
:func:`uses` splices a group's options into a command's signature and hands the command
the built object, so no command lists an option twice and none sees an untyped dict.
Groups validate what they build, before any work.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..config import (
    EngineKind,
    ModelOptions,
    OnBadRow,
    RayOptions,
    ResumeMode,
    RowOptions,
    RunOptions,
    ScoringOptions,
    default_model,
)
from ..errors import UsageError
from .options import (
    AllowPickle,
    ChunkSize,
    Compile,
    Dataset,
    Device,
    Dtype_,
    Engine_,
    Extract,
    GpusPerWorker,
    Inputs,
    MaxBatch,
    MaxLength,
    MaxTokens,
    ModelName,
    NoDedup,
    NoPrefix,
    NumWorkers,
    OnBadRow_,
    QuestionField,
    RayAddress,
    Rejected,
    ResponseField,
    Resume,
    Revision,
    Shaping_,
    Split,
    Streams,
    TrustRemote,
)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Source:
    inputs: list[str]
    dataset: str | None
    split: str

    def specs(self, output: str, *also_written: str | None) -> list[Any]:
        """The inputs, never including what this run writes (``output``, its ``.partial/``,
        ``also_written``) though it may sit in an input directory."""
        from ..io.inputs import resolve_inputs
        from ..io.paths import run_outputs

        if not self.inputs and not self.dataset:
            raise UsageError(
                "give an INPUT (file, glob, directory, '-' or hf://datasets/NAME) or --dataset"
            )
        exclude = [*run_outputs(output), *(p for p in also_written if p and p != "-")]
        return resolve_inputs(self.inputs, dataset=self.dataset, split=self.split, exclude=exclude)


def sources(inputs: Inputs = None, dataset: Dataset = None, split: Split = "train") -> Source:
    return Source(inputs or [], dataset, split)


def row_options(
    question_field: QuestionField = None,
    response_field: ResponseField = None,
    extract: Extract = RowOptions.extract,
    shaping: Shaping_ = RowOptions.shaping,
) -> RowOptions:
    return RowOptions(question_field, response_field, extract, shaping)


def reward_row_options(
    extract: Extract = RowOptions.extract, shaping: Shaping_ = RowOptions.shaping
) -> RowOptions:
    return RowOptions(extract=extract, shaping=shaping)


def pair_row_options(
    question_field: QuestionField = None, extract: Extract = RowOptions.extract
) -> RowOptions:
    return RowOptions(question_field=question_field, extract=extract)


def extract_row_options(
    question_field: QuestionField = None,
    response_field: ResponseField = None,
    extract: Extract = RowOptions.extract,
) -> RowOptions:
    return RowOptions(question_field, response_field, extract, score=False)


def model_options(
    model: ModelName = None,
    revision: Revision = None,
    device: Device = ModelOptions.device,
    dtype: Dtype_ = ModelOptions.dtype,
    trust_remote_code: TrustRemote = False,
    allow_pickle_weights: AllowPickle = False,
    compile: Compile = False,
) -> ModelOptions:
    opts = ModelOptions(
        model=model or default_model(),
        revision=revision,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_pickle_weights=allow_pickle_weights,
        compile=compile,
    )
    opts.validate()
    return opts


def scoring_options(
    max_length: MaxLength = ScoringOptions.max_length,
    max_tokens_per_batch: MaxTokens = None,
    streams: Streams = None,
    max_batch_size: MaxBatch = None,
    no_dedup: NoDedup = False,
    no_prefix_reuse: NoPrefix = False,
) -> ScoringOptions:
    opts = ScoringOptions(
        max_length=max_length,
        max_tokens_per_batch=max_tokens_per_batch,
        max_batch_size=max_batch_size,
        dedup=not no_dedup,
        prefix_reuse=not no_prefix_reuse,
        streams=streams,
    )
    opts.validate()
    return opts


@dataclass(frozen=True)
class Robustness:
    chunk_size: int
    resume: ResumeMode
    on_bad_row: OnBadRow
    rejected: str | None

    def run_options(
        self,
        output: str,
        rows: RowOptions,
        model: ModelOptions | None = None,
        scoring: ScoringOptions | None = None,
    ) -> RunOptions:
        opts = RunOptions(
            output,
            rows,
            model or ModelOptions(),
            scoring or ScoringOptions(),
            self.chunk_size,
            self.resume,
            self.on_bad_row,
            self.rejected,
        )
        opts.validate()
        return opts


def robustness(
    chunk_size: ChunkSize = RunOptions.chunk_size,
    resume: Resume = RunOptions.resume,
    on_bad_row: OnBadRow_ = RunOptions.on_bad_row,
    rejected: Rejected = None,
) -> Robustness:
    if chunk_size < 1:
        raise UsageError(f"--chunk-size must be at least 1, got {chunk_size}")
    return Robustness(chunk_size, resume, on_bad_row, rejected)


@dataclass(frozen=True)
class EngineChoice:
    kind: EngineKind
    ray: RayOptions

    def factory(self) -> Callable[[RunOptions], Any] | None:
        """How to build the engine for a run (None: the local engine)."""
        if self.kind == EngineKind.local:
            return None
        from ..engines.ray.engine import RayEngine

        return lambda opts: RayEngine(opts, self.ray)


def engine_options(
    engine: Engine_ = EngineKind.local,
    ray_address: RayAddress = None,
    num_workers: NumWorkers = None,
    gpus_per_worker: GpusPerWorker = None,
) -> EngineChoice:
    ray = RayOptions(address=ray_address, num_workers=num_workers, gpus_per_worker=gpus_per_worker)
    if engine == EngineKind.local:
        for name, value in (
            ("--ray-address", ray_address),
            ("--num-workers", num_workers),
            ("--gpus-per-worker", gpus_per_worker),
        ):
            if value is not None:
                raise UsageError(f"{name} needs --engine ray")
    else:
        ray.validate()
    return EngineChoice(engine, ray)


# ---------------------------------------------------------------- wiring


def uses(**groups: Callable[..., Any]) -> Callable[[F], F]:
    """Give a command the objects built by ``groups`` (name -> group function): the group's
    options replace the command's parameter of that name on the command line."""

    def decorate(func: F) -> F:
        own = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
        params: list[inspect.Parameter] = []
        spliced: dict[str, list[str]] = {}
        for p in own.parameters.values():
            group = groups.get(p.name)
            if group is None:
                params.append(p.replace(annotation=hints.get(p.name, p.annotation)))
                continue
            group_hints = typing.get_type_hints(group, include_extras=True)
            inner = list(inspect.signature(group).parameters.values())
            spliced[p.name] = [q.name for q in inner]
            params += [q.replace(annotation=group_hints[q.name]) for q in inner]

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            for name, group in groups.items():
                kwargs[name] = group(**{k: kwargs.pop(k) for k in spliced[name]})
            return func(**kwargs)

        command.__signature__ = inspect.Signature(params, __validate_parameters__=False)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return decorate
