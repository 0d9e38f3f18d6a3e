"""``execution.mode: ddp``: a Tune function trainable that runs one trial as a Ray Train ``TorchTrainer``.

The packed counterpart is :func:`orchestrator.run.packed.packed_trainable`; Tune's ``config`` has
the same shape, ``{"trial": <trial config>, "exec": <execution settings>}``.

Ray Train starts ``num_workers`` workers and the ``torch.distributed`` group (NCCL with GPUs, gloo on
CPU); each worker runs :func:`train_fn_per_worker`, i.e. ``run_trial`` with
``Runtime.from_process_group()``. The loop all-reduces train and eval statistics, so every rank holds
the same metrics; every rank reports every epoch (Ray Train's report is a barrier) and only rank 0
attaches the checkpoint. ``TuneReportCallback`` forwards rank 0's rows to the Tune trial.

The Train run is named after the Tune trial id and stored under the sweep's storage, so a retried or
resumed trial finds its Train checkpoints again (Train V2 restores a run of the same name).
"""

from __future__ import annotations

from typing import Any

from orchestrator.run.worker import node_tagged, set_threads

# The imports inside the functions keep this module light (see orchestrator.run.worker).


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """One DDP worker: the shared training loop on this rank (``config`` is the ``train_loop_config``)."""
    import ray.train
    import torch
    from ray.train.torch import get_device

    from orchestrator.run.reporter import RayReporter
    from trainables.errors import Diverged
    from trainables.loop import run_trial
    from trainables.plugins import import_specs
    from trainables.runtime import Runtime

    import_specs(config.get("plugins", []))
    set_threads(config["threads"])
    trial = config["trial"]
    rt = Runtime.from_process_group("cuda" if config["use_gpu"] else "cpu")
    if config["use_gpu"]:  # the GPU Ray Train assigned to this worker (CUDA_VISIBLE_DEVICES may be shared)
        rt.device = get_device()
        torch.cuda.set_device(rt.device)
    reporter = RayReporter(
        node_tagged(ray.train.report),
        ray.train.get_checkpoint,
        ray.train.Checkpoint,
        epochs=int(trial["epochs"]),
        attach_checkpoint=rt.is_main,
    )
    try:
        summary = run_trial(trial, reporter, runtime=rt)
    except Diverged as exc:  # a finished trial with status diverged, not an error to retry
        summary = exc.summary
    reporter.finish(summary)


def ddp_trainable(config: dict[str, Any]) -> None:
    """The Tune trial: build and fit a ``TorchTrainer`` for this trial's config."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    ex = config["exec"]
    trial_id = tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={
            "trial": config["trial"],
            "threads": ex["cpus_per_worker"],
            "use_gpu": ex["use_gpu"],
            "plugins": ex.get("plugins", []),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=ex["num_workers"],
            use_gpu=ex["use_gpu"],
            resources_per_worker={"CPU": ex["cpus_per_worker"]},
        ),
        run_config=ray.train.RunConfig(
            name=trial_id,
            storage_path=ex["ddp_storage"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=ex["keep"]),
            failure_config=ray.train.FailureConfig(max_failures=0),  # retries are Tune's (max_failures per trial)
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # not every rank's every report
        ),
    )
    trainer.fit()
