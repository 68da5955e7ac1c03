"""Fixtures of the training tests: one start checkpoint and one data set per session."""

import pytest

from tests.training.helpers import make_bolt_start_checkpoint, make_data, make_start_checkpoint


@pytest.fixture(scope="session")
def start_checkpoint(tmp_path_factory):
    return make_start_checkpoint(tmp_path_factory.mktemp("start"))


@pytest.fixture(scope="session")
def bolt_start_checkpoint(tmp_path_factory):
    return make_bolt_start_checkpoint(tmp_path_factory.mktemp("bolt-start"))


@pytest.fixture(scope="session")
def data_files(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data"))
