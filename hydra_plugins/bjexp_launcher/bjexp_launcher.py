"""bjexp's SLURM launcher (`_target_` of conf/hydra/launcher/slurm.yaml). Hydra only instantiates launchers that live
in the `hydra_plugins` namespace, hence this module. It is hydra-submitit-launcher's SlurmLauncher plus two things:
- a failed job's exception comes back with its remote traceback attached (Hydra catches the task's exception on the
  node and returns it without its traceback, so otherwise only the last line reaches you);
- a refused submission names the requested job shape (bjexp.slurm.submission_error), not just sbatch's one line.
Requeueing is the parent's: on SIGUSR2 `checkpoint()` resubmits the same Hydra job, which reuses its run dir."""
from __future__ import annotations

import logging
import traceback
from typing import Any, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

log = logging.getLogger(__name__)


class BjexpSlurmLauncher(SlurmLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:  # runs on the node, once per job (and per requeue)
        from bjexp.slurm import register_resolvers

        register_resolvers()  # the job re-composes its config here; the profiles' resolvers must exist
        ret = super().__call__(*args, **kwargs)
        if ret.status == JobStatus.FAILED and isinstance(ret._return_value, BaseException):
            import submitit

            err = ret._return_value
            env = submitit.JobEnvironment()
            tb = "".join(traceback.format_exception(err)).rstrip()
            log.error("job %s failed:\n%s", env.job_id, tb)  # also in the job's submitit log
            # Notes travel with the pickled exception and are printed under it in the submitting process.
            err.add_note(f"--- remote traceback (SLURM job {env.job_id} on {env.hostname}; log {env.paths.stdout}) ---"
                         f"\n{tb}")
        return ret

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError

        try:
            return super().launch(job_overrides, initial_job_idx)
        except FailedJobError as e:
            if not str(e).lstrip().startswith("sbatch"):  # the job itself died (e.g. killed): keep submitit's message
                raise
            from bjexp.slurm import submission_error

            raise submission_error(self.params, str(e)) from None
