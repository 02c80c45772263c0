"""The keys of NeMo Gym's rollout rows that agents set on their `/run` answers (ngym's collector reads
`_ng_failure_class`: such an answer is a failure, never a reward). NeMo Gym's collector itself is not here:
ngym's `ng_collect_rollouts` collects."""

from __future__ import annotations

NG_FAILURE_CLASS_KEY = "_ng_failure_class"
NG_NO_PERSIST_KEY = "_ng_no_persist"
NG_DISPATCH_DRAINED_KEY = "_ng_dispatch_drained"
NG_TERMINAL_KEY = "_ng_failure_terminal"
NG_RESULT_TYPE_KEY = "_ng_result_type"
NG_TASK_ID_KEY = "_ng_task_id"
NG_TRAJECTORY_KEY = "ng_trajectory"
NG_PERF_KEY = "ng_perf"
NG_ELAPSED_KEY = "elapsed_seconds"
