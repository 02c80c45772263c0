"""The folder an environment's process puts first on `sys.path`, so that `import nemo_gym` finds our
implementation of NeMo Gym's author interface (`compat/nemo_gym`). Never added to ngym's own processes."""
