"""Policy settings: defaults are valid, bad values and unknown keys fail with the key path."""

from __future__ import annotations

import pytest

from edge.cache import PagedCache
from edge.cache.policies import make_policy, parse_params, policy_class, policy_names
from edge.config import CacheConfig, EdgeConfig, from_mapping, to_mapping
from edge.errors import ConfigError


@pytest.mark.parametrize("name", policy_names())
def test_defaults_are_valid_and_round_trip(name):
    params = policy_class(name).Params()
    assert parse_params(name, to_mapping(params)) == params
    assert make_policy(name).params == params


@pytest.mark.parametrize(("name", "params", "message"), [
    ("s3fifo", {"small_fraction": 1.5},
     "policy_params: small_fraction must be between 0 and 1 (exclusive), got 1.5"),
    ("s3fifo", {"small_fraction": 0}, "small_fraction must be between 0 and 1"),
    ("s3fifo", {"smal_fraction": 0.2}, "policy_params.smal_fraction: unknown key (known keys: "
                                      "ghost_fraction, move_to_main_threshold, small_fraction)"),
    ("s3fifo", {"move_to_main_threshold": 4}, "move_to_main_threshold must be 1, 2 or 3"),
    ("s3fifo", {"move_to_main_threshold": "2"},
     "policy_params.move_to_main_threshold: expected an integer, got '2'"),
    ("s3fifo", {"ghost_fraction": -0.5}, "ghost_fraction must be between 0 and 10, got -0.5"),
    ("gdsf", {"cost": "latency"},
     "policy_params.cost: 'latency' is not one of 'load_cost', 'uniform', 'size'"),
    ("lfu", {"aging": "yes"}, "policy_params.aging: expected true or false, got 'yes'"),
    ("arc", {"initial_p_fraction": 2}, "initial_p_fraction must be between 0 and 1, got 2.0"),
    ("arc", {"p": 0.5}, "policy_params.p: unknown key (known keys: initial_p_fraction)"),
    ("lru", {"size": 3}, "policy_params.size: unknown key"),
])
def test_bad_params_name_the_key(name, params, message):
    with pytest.raises(ConfigError) as err:
        parse_params(name, params)
    assert message in str(err.value)
    with pytest.raises(ConfigError, match="policy_params"):  # the same through the cache
        PagedCache(1000, name, policy_params=params, load_workers=0)


def test_bad_params_in_a_policy_file_are_caught_at_load():
    with pytest.raises(ConfigError, match="small_fraction must be between 0 and 1"):
        from_mapping(EdgeConfig, {"cache": {"policy": "s3fifo",
                                            "policy_params": {"small_fraction": 1.5}}})
    config = from_mapping(EdgeConfig, {"cache": {"policy": "gdsf",
                                                 "policy_params": {"cost": "uniform"}}})
    assert config.cache == CacheConfig(policy="gdsf", policy_params={"cost": "uniform"})


def test_params_objects_check_themselves():
    with pytest.raises(ValueError, match="small_fraction"):
        policy_class("s3fifo").Params(small_fraction=1.0)
    with pytest.raises(ValueError, match="cost"):
        policy_class("gdsf").Params(cost="bytes")
    params = policy_class("s3fifo").Params(small_fraction=0.25)
    policy = make_policy("s3fifo", params)  # a Params object is taken as is
    assert policy.params is params
