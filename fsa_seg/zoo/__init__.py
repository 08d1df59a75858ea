"""The model zoo as data: released protocols, the config generator and index, published results."""
