"""From received instances to jobs: a quiet series becomes a job, a late instance joins it.

:class:`Intake` decides what new instances of a series do in the job store: join the series'
job while it waits, re-queue it when it had failed (a sender's resend), re-open it when it was
processed and its model is kept (late instances: same derived series), or make a new revision
when that model is gone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from dicom_sr.config import PipelineConfig
from dicom_sr.jobs import Job, JobStore
from dicom_sr.node.assembly import Arrivals, Assembly
from dicom_sr.node.spool import Spool
from dicom_sr.node.upkeep import Upkeep
from dicom_sr.pipeline import derived_series_uid_for

__all__ = ["KIND", "Intake"]

logger = logging.getLogger(__name__)

#: The job kind of the node's jobs in the shared job store.
KIND = "listen"


class Intake:
    """Records arrivals of one node (its store, spool, pipeline and identity) as jobs."""

    def __init__(
        self,
        store: JobStore,
        spool: Spool,
        config: PipelineConfig,
        identity: str,
        upkeep: Upkeep,
    ) -> None:
        self.store = store
        self.spool = spool
        self.config = config
        self.identity = identity
        self.upkeep = upkeep

    def recover(self, assembly: Assembly) -> list[Job]:
        """After a restart: series still being received and spooled instances that never
        became a job start their series timeout again. Returns every job, for the caller's own
        checks."""
        jobs = self.store.jobs(kind=KIND)
        known: dict[str, set[str]] = {}
        waiting = 0
        for job in jobs:
            known.setdefault(job.source_series_uid, set()).update(job.paths)
            if job.state != "received":
                continue
            if job.config_hash != self.identity:
                self.store.set_state(
                    job.key, "failed", error="received under another pipeline; assembled again"
                )
            for path in map(Path, job.paths):  # its series timeout starts again
                if path.is_file():
                    assembly.arrived(job.study_uid, job.source_series_uid, path, job.calling_ae)
                    waiting += 1
        for study, series, paths in self.spool.series():
            for path in paths:
                if str(path) not in known.get(series, set()):
                    assembly.arrived(study, series, path)
                    waiting += 1
        if waiting:
            logger.info("%d spooled instance(s) not yet in a queued job: assembling again", waiting)
        return jobs

    def latest(self, series_uid: str) -> Job | None:
        """The latest revision of this source series' job under this node's pipeline."""
        jobs = self.store.jobs(kind=KIND, source_series_uid=series_uid)
        mine = [j for j in jobs if j.config_hash == self.identity]
        return max(mine, key=lambda j: j.revision, default=None)

    def failed_series(self, series_uid: str) -> bool:
        """The series' latest job failed (so a resend of it is worth assembling again)."""
        latest = self.latest(series_uid)
        return latest is not None and latest.state == "failed"

    def record(self, arrivals: Arrivals, state: Literal["received", "queued"]) -> None:
        """Put a series' new instances in the job store: while it is still arriving as a
        *received* job, once quiet as a *queued* one. They join the series' latest job if that
        has not started, or re-queue it if it failed. Instances that come after the series was
        processed (late instances) join the same derived series, upscaled by the model saved
        for it; without that model they make a new revision with every instance so far."""
        series = arrivals.series_uid
        latest = self.latest(series)
        tag = series[-8:]
        if latest is not None and latest.state in ("received", "queued"):
            self.store.add_paths(latest.key, arrivals.paths)
            if state == "queued" and latest.state == "received":
                job = self.store.set_state(latest.key, "queued")
                rev = f" revision {job.revision}" if job.revision else ""
                logger.info(
                    "series ..%s: complete, %d instance(s) queued%s", tag, len(job.paths), rev
                )
            return
        if latest is not None and latest.state == "failed":
            if state == "queued":
                self.store.add_paths(latest.key, arrivals.paths)
                self.store.retry([latest.key])
                logger.info("series ..%s: sent again after it failed; queued again", tag)
            return
        new = {str(p) for p in arrivals.paths} - set(latest.paths if latest else ())
        if latest is not None and not new:
            if latest.purged is not None and state == "queued":
                self._drop_resent(latest, arrivals)
            return  # nothing new (a resend of what was processed)
        if latest is not None and latest.state == "processing":
            return  # joins once that attempt ends: the next quiet period records it
        if latest is not None and self.model_kept(latest):
            if state == "queued":
                self.store.reopen(latest.key, sorted(new))
                logger.info(
                    "series ..%s: %d late instance(s) join derived ..%s (its saved model)",
                    tag, len(new), latest.key[-8:],
                )  # fmt: skip
            return
        if latest is not None and state == "queued":
            logger.warning(
                "series ..%s: %d late instance(s) but the model of derived ..%s is gone: "
                "a new revision of the whole series",
                tag, len(new), latest.key[-8:],
            )  # fmt: skip
        revision = 0 if latest is None else latest.revision + 1
        folder = self.spool.root / arrivals.study_uid / series
        paths = sorted({*map(str, folder.glob("*.dcm")), *map(str, arrivals.paths)})
        key = derived_series_uid_for(series, self.config, revision)
        self.store.add(
            key,
            kind=KIND,
            study_uid=arrivals.study_uid,
            source_series_uid=series,
            config_hash=self.identity,
            paths=paths,
            revision=revision,
            state=state,
            calling_ae=arrivals.calling_ae,
        )
        rev = f" revision {revision}" if revision else ""
        if state == "received":
            logger.info("series ..%s: receiving%s", tag, rev)
        else:
            logger.info("series ..%s: complete, %d instance(s) queued%s", tag, len(paths), rev)

    def _drop_resent(self, job: Job, arrivals: Arrivals) -> None:
        """A resend of a series that was processed and whose files retention has deleted: the
        copies would otherwise stay in the spool for ever (retention is done with that job)."""
        self.upkeep.delete_files([str(p) for p in arrivals.paths])
        logger.info(
            "series ..%s: sent again after retention deleted its files; already processed as "
            "derived ..%s, the %d copies are deleted (to process it again: dicom-sr jobs "
            "forget %s, then send it again)",
            arrivals.series_uid[-8:], job.key[-8:], len(arrivals.paths), job.key,
        )  # fmt: skip

    def model_kept(self, job: Job) -> bool:
        """The model a done job was processed with is still on disk (late instances)."""
        return job.purged is None and self.upkeep.model_path(job.key).is_file()
