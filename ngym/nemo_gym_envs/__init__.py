"""NeMo Gym's environments on ngym, unchanged.

A NeMo Gym resources server (`resources_servers/<name>/app.py` with its config, requirements and data) runs under
ng_run as it is: `package` fetches NeMo Gym's published files, `survey` says what each environment needs,
`venvs` installs an environment's requirements into a virtual environment of its own (cached by content),
`detect` tells ng_run which instances are NeMo Gym environments, `serve` is the environment's process, and
`compat/nemo_gym` is our implementation of the `nemo_gym` names environments import. That package is put on
`sys.path` only inside an environment's process, so a real nemo-gym installation is never shadowed elsewhere.
"""
