"""The model zoo as data: the released protocols, the published results, the names and titles of the
experiments (configs by method, backbone, proxy and benchmark) and the index of the packaged configs."""
