"""Fine-tuned models and checkpoints as models: listed, looked up and deleted per project.

The hooks `/v1/models` uses (`list_fine_tuned`, `delete_fine_tuned`); finding one name's weights is
`tunery.store.catalog`'s (an indexed lookup, re-exported here as `find_fine_tuned`). A succeeded job is a model
(`fine_tuned_model`, weights in `weights_path`); each kept checkpoint is one too
(`…:ckpt-step-N`). Deleting removes the weights from disk; the job itself stays, as at OpenAI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunery.jobs import states
from tunery.store.catalog import FineTunedModel, find_fine_tuned
from tunery.store.jobs import Job, JobCheckpoint

__all__ = ["FineTunedModel", "delete_fine_tuned", "find_fine_tuned", "list_fine_tuned"]


def _models(session: Session, project_id: str) -> list[FineTunedModel]:
    out = []
    jobs = session.scalars(
        select(Job).where(Job.project_id == project_id, Job.status == states.SUCCEEDED, Job.model_deleted.is_(False),
                          Job.fine_tuned_model.is_not(None)).order_by(Job.seq)
    ).all()
    for job in jobs:
        out.append(FineTunedModel(job.fine_tuned_model, job.finished_at or job.created_at, job.project_id, job.model,
                                  job.weights_path or "", job.id))
    rows = session.execute(
        select(JobCheckpoint, Job).join(Job, Job.id == JobCheckpoint.job_id).where(
            Job.project_id == project_id, JobCheckpoint.deleted.is_(False), JobCheckpoint.model_name.is_not(None)
        ).order_by(JobCheckpoint.seq)
    ).all()
    for ckpt, job in rows:
        out.append(FineTunedModel(ckpt.model_name, ckpt.created_at, job.project_id, job.model, ckpt.path, job.id, ckpt.step))
    return out


def list_fine_tuned(session: Session, project_id: str) -> list[dict]:
    """`/v1/models` entries ({id, created, owned_by}) of the project's fine-tuned models."""
    return [{"id": m.id, "created": m.created, "owned_by": m.owned_by} for m in _models(session, project_id)]


def delete_fine_tuned(store, session: Session, project_id: str, model_id: str) -> bool:
    """Delete a fine-tuned model or checkpoint of the project and its weights."""
    model = find_fine_tuned(session, project_id, model_id)
    if model is None:
        return False
    if model.step is None:
        job = session.scalar(select(Job).where(Job.id == model.job_id))
        job.model_deleted = True
    else:
        ckpt = session.scalar(select(JobCheckpoint).where(JobCheckpoint.job_id == model.job_id, JobCheckpoint.step == model.step))
        ckpt.deleted = True
    session.flush()
    if model.weights_path and Path(model.weights_path).is_dir():
        shutil.rmtree(model.weights_path, ignore_errors=True)
    return True
