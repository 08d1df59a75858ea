"""Checks a user runs before or around an evaluation: what this environment has (``env_info``, behind
``tools/collect_env.py``) and whether the datasets are in place and complete (``data_check``, behind
``tools/check_data.py``)."""
