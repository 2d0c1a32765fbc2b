"""Fixtures shared by the protocol tests."""

import pytest

from aws_bed import MotoEc2, restore_environment, set_environment


@pytest.fixture(scope="module")
def moto():
    """moto's EC2 server on loopback (tests/aws_bed.py), with its dummy credentials in the environment."""
    old = set_environment()
    server = MotoEc2()
    yield server
    server.stop()
    restore_environment(old)
