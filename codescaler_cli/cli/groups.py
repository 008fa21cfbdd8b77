"""Option groups: functions whose parameters are options and whose result is a typed object.

A group's parameters are options declared in options.py, with defaults read by
``default_of`` from the class the group builds (tests/test_cli.py checks none is written
twice);
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
    CacheOptions,
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
    CacheDir,
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
    NoCache,
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
    default_of,
)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Source:
    inputs: list[str]
    dataset: str | None
    split: str | None  # None: not chosen (the Hub's train; a saved DatasetDict's only split)

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


def sources(inputs: Inputs = None, dataset: Dataset = None, split: Split = None) -> Source:
    return Source(inputs or [], dataset, split)


def row_options(
    question_field: QuestionField = default_of(RowOptions, "question_field"),
    response_field: ResponseField = default_of(RowOptions, "response_field"),
    extract: Extract = default_of(RowOptions, "extract"),
    shaping: Shaping_ = default_of(RowOptions, "shaping"),
) -> RowOptions:
    return RowOptions(question_field, response_field, extract, shaping)


def reward_row_options(
    extract: Extract = default_of(RowOptions, "extract"),
    shaping: Shaping_ = default_of(RowOptions, "shaping"),
) -> RowOptions:
    return RowOptions(extract=extract, shaping=shaping)


def pair_row_options(
    question_field: QuestionField = default_of(RowOptions, "question_field"),
    extract: Extract = default_of(RowOptions, "extract"),
) -> RowOptions:
    return RowOptions(question_field=question_field, extract=extract)


def extract_row_options(
    question_field: QuestionField = default_of(RowOptions, "question_field"),
    response_field: ResponseField = default_of(RowOptions, "response_field"),
    extract: Extract = default_of(RowOptions, "extract"),
) -> RowOptions:
    return RowOptions(question_field, response_field, extract, score=False)


def model_options(
    # None: read $CODESCALER_MODEL when the command runs, not when the CLI is imported.
    model: ModelName = None,
    revision: Revision = default_of(ModelOptions, "revision"),
    device: Device = default_of(ModelOptions, "device"),
    dtype: Dtype_ = default_of(ModelOptions, "dtype"),
    trust_remote_code: TrustRemote = default_of(ModelOptions, "trust_remote_code"),
    allow_pickle_weights: AllowPickle = default_of(ModelOptions, "allow_pickle_weights"),
    compile: Compile = default_of(ModelOptions, "compile"),
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
    max_length: MaxLength = default_of(ScoringOptions, "max_length"),
    max_tokens_per_batch: MaxTokens = default_of(ScoringOptions, "max_tokens_per_batch"),
    streams: Streams = default_of(ScoringOptions, "streams"),
    max_batch_size: MaxBatch = default_of(ScoringOptions, "max_batch_size"),
    no_dedup: NoDedup = not default_of(ScoringOptions, "dedup"),
    no_prefix_reuse: NoPrefix = not default_of(ScoringOptions, "prefix_reuse"),
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


def cache_options(
    no_cache: NoCache = not default_of(CacheOptions, "enabled"),
    cache_dir: CacheDir = default_of(CacheOptions, "cache_dir"),
) -> CacheOptions:
    if no_cache and cache_dir is not None:
        raise UsageError("--no-cache and --cache-dir cannot be used together")
    opts = CacheOptions(enabled=not no_cache, cache_dir=cache_dir)
    if opts.enabled:
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
        cache: CacheOptions | None = None,
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
            cache or CacheOptions(),
        )
        opts.validate()
        return opts


def robustness(
    chunk_size: ChunkSize = default_of(RunOptions, "chunk_size"),
    resume: Resume = default_of(RunOptions, "resume"),
    on_bad_row: OnBadRow_ = default_of(RunOptions, "on_bad_row"),
    rejected: Rejected = default_of(RunOptions, "rejected"),
) -> Robustness:
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
    engine: Engine_ = EngineKind.local,  # the first choice: Ray is opt-in
    ray_address: RayAddress = default_of(RayOptions, "address"),
    num_workers: NumWorkers = default_of(RayOptions, "num_workers"),
    gpus_per_worker: GpusPerWorker = default_of(RayOptions, "gpus_per_worker"),
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
