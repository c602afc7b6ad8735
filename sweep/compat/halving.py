"""`scheduler: halving`: synchronous successive halving, as Ray Tune's HyperBand runs it.

Tune's `HyperBandScheduler` already does the work: it pauses a trial at a rung (Tune saves
the checkpoint the trial reported with that result), halves a bracket once every live trial
has reached its rung, stops the losers and resumes the winners from their checkpoints. What
it does not offer is a single bracket: it spreads trials over brackets of preset sizes, some
of which never halve. For a sweep of known size the textbook algorithm is one bracket
holding every trial, and asynchronous ASHA promotes whoever reaches a rung first; on a grid
of tens of points that lets early arrivals through before the rest are in.

So this subclass puts every trial in one `_Bracket` (Tune's own) and mends the edges that
single bracket meets (ray 2.60.0, pinned; tests/integration/test_speed.py and test_reliability.py):
- a bracket halves as soon as all trials *added so far* reach the rung; Tune adds trials
  lazily (a searcher may hand them out one at a time), so it waits for all `n_trials`;
- a trial's last report (it has finished training; see `final_key`) is never paused: a trial
  resumed from an earlier checkpoint would train again;
- `HyperBandScheduler.on_trial_remove` stops re-checking a bracket after its first halving
  (`is_being_processed` is set and never cleared), so when the last trial a rung waited for
  finishes or fails instead of reporting, the paused ones would wait for ever;
- a resumed sweep adds its ended trials too, which would never report again: left out;
- workers: see `on_trial_result` and `PointsUntilLastRung`.
An interrupted sweep resumes its unfinished trials from their checkpoints and halves among
them from there (a trial that was waiting at a rung trains to its next eval before it waits
again: one eval more than the others at that comparison).
"""

from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandScheduler, TrialScheduler
from ray.tune.schedulers.hyperband import _Bracket
from ray.tune.search import BasicVariantGenerator


class SuccessiveHalving(HyperBandScheduler):
    """Every trial runs `grace_period` evaluations; at each rung (grace x reduction_factor^k
    evaluations) the best 1/reduction_factor of them go on, until one would be left."""

    def __init__(self, n_trials: int, rungs: list, grace_period: int, eta: int, final_key: str):
        """`rungs`: the spec's `Scheduler.halving_rungs` (what `plan` shows); `final_key`: set in a
        trial's last report (`sweep.trial.run.FINAL`)."""
        last = int(rungs[-1][0] * eta) if rungs else grace_period  # where the last halving leads
        super().__init__(time_attr="training_iteration", max_t=last, reduction_factor=eta, stop_last_trials=False)
        self.n_trials, self.final_key = n_trials, final_key
        self.bracket = _Bracket(
            time_attr="training_iteration",
            max_trials=n_trials,
            init_t_attr=grace_period,
            max_t_attr=last,
            eta=eta,
            s=len(rungs),
            stop_last_trials=False,
        )
        self._hyperbands = [[self.bracket]]  # what HyperBand's choose_trial_to_run walks
        self._stop_once_paused: set = set()
        self._ended_before = 0

    live: SuccessiveHalving | None = None  # the one Ray Tune is running (this process runs one sweep at a time)

    def on_trial_add(self, tune_controller, trial):
        if not self._metric or not self._metric_op:
            raise ValueError("SuccessiveHalving needs `metric` and `mode` (from TuneConfig)")
        SuccessiveHalving.live = self
        if trial.status in (Trial.TERMINATED, Trial.ERROR):  # a resumed sweep's ended trial: not compared again
            self._ended_before += 1
            return
        self.bracket.add_trial(trial)
        self._trial_info[trial] = self.bracket, 0

    def on_trial_result(self, tune_controller, trial, result):
        if result.get(self.final_key):
            return TrialScheduler.CONTINUE  # it ends now; on_trial_complete takes it out of the bracket
        self.bracket.update_trial_stats(trial, result)
        if self.bracket.continue_trial(trial):
            return TrialScheduler.CONTINUE
        if not self._all_added():
            return TrialScheduler.PAUSE  # at the rung; the trials not yet started will be compared too
        action = self._process_bracket(tune_controller, self.bracket)
        if action == TrialScheduler.STOP:
            # The last trial to reach the rung lost. Stopped now, its worker would be shut down
            # before the winners ask for one; paused, it is saved first, and by then Tune has
            # staged a winner to run on it. It is stopped once paused (choose_trial_to_run).
            self._stop_once_paused.add(trial)
            return TrialScheduler.PAUSE
        return action

    def choose_trial_to_run(self, tune_controller):
        for trial in [t for t in self._stop_once_paused if t.status == Trial.PAUSED]:
            self._stop_once_paused.discard(trial)
            tune_controller.stop_trial(trial)
        return super().choose_trial_to_run(tune_controller)

    def on_trial_remove(self, tune_controller, trial):
        self.bracket.cleanup_trial(trial)
        self.bracket.trials_to_unpause.discard(trial)
        if self._all_added() and self.bracket.current_trials() and self.bracket.cur_iter_done():
            self._process_bracket(tune_controller, self.bracket)  # the rung waited for this trial

    def _all_added(self) -> bool:
        return len(self.bracket._all_trials) + self._ended_before >= self.n_trials

    def rungs_done(self) -> bool:
        """No trial will pause or resume any more: the last halving is done and its winners
        have resumed, or no trial is left."""
        bracket = self.bracket
        return not bracket.current_trials() or (bracket._halves == 0 and not bracket.trials_to_unpause)


class PointsUntilLastRung(BasicVariantGenerator):
    """Ray Tune's grid/random search, not "over" until the last rung is done.

    When a trial pauses, Tune keeps its worker for reuse only if a trial is waiting to start
    or the search is not over (`TuneController._maybe_cache_trial_actor`, ray 2.60.0). Once
    every point has started, the workers of the last trials to reach a rung were shut down,
    and the trials that resumed a moment later each started a new worker, importing the
    stack and loading the base model again.
    """

    def is_finished(self) -> bool:
        live = SuccessiveHalving.live  # not an attribute: a resumed sweep unpickles this and the scheduler apart
        return super().is_finished() and (live is None or live.rungs_done())
