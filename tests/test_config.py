from __future__ import annotations

import pytest

from tophosts.config import Settings, SettingsError, load


def test_defaults() -> None:
    assert load([], {}) == Settings(
        host="0.0.0.0",
        port=8080,
        store="memory",
        top=10,
        max_skew=300,
        max_body=8 * 1024 * 1024,
        max_hosts=10_000,
        log_level="info",
        redis_prefix="tophosts",
        redis_timeout=1.0,
        workers=1,
    )


def test_environment_variables_set_every_setting() -> None:
    env = {
        "TOPHOSTS_HOST": "127.0.0.1",
        "TOPHOSTS_PORT": "9000",
        "TOPHOSTS_STORE": "redis://localhost:6379/2",
        "TOPHOSTS_TOP": "25",
        "TOPHOSTS_MAX_SKEW": "30",
        "TOPHOSTS_MAX_BODY": "1MiB",
        "TOPHOSTS_MAX_HOSTS": "50",
        "TOPHOSTS_LOG_LEVEL": "WARNING",
        "TOPHOSTS_REDIS_PREFIX": "th-prod",
        "TOPHOSTS_REDIS_TIMEOUT": "0.25",
        "TOPHOSTS_WORKERS": "4",
        "TOPHOSTS_IDEMPOTENCY_TTL": "600",
        "TOPHOSTS_MAX_IDEMPOTENCY_KEYS": "5000",
    }
    assert load([], env) == Settings(
        host="127.0.0.1",
        port=9000,
        store="redis://localhost:6379/2",
        top=25,
        max_skew=30,
        max_body=1024 * 1024,
        max_hosts=50,
        log_level="warning",
        redis_prefix="th-prod",
        redis_timeout=0.25,
        workers=4,
        idempotency_ttl=600,
        max_idempotency_keys=5000,
    )


def test_a_flag_wins_over_its_variable() -> None:
    settings = load(
        ["--port", "7000", "--max-skew", "5"], {"TOPHOSTS_PORT": "9000", "TOPHOSTS_TOP": "3"}
    )
    assert (settings.port, settings.max_skew, settings.top) == (7000, 5, 3)


def test_settings_round_trip_through_the_environment() -> None:
    settings = load(["--top", "7", "--max-body", "512KiB"], {})
    assert load([], settings.environ()) == settings
    argv = ["--store", "redis://:s3cret@10.0.0.5:6380/2", "--workers", "3", "--redis-timeout", "2"]
    settings = load([*argv, "--redis-prefix", "{th}"], {})
    assert load([], settings.environ()) == settings
    # The default TTL (2 h plus --max-skew) stays a default: it follows --max-skew.
    assert "TOPHOSTS_IDEMPOTENCY_TTL" not in settings.environ()
    settings = load(["--idempotency-ttl", "90", "--max-idempotency-keys", "7"], {})
    assert load([], settings.environ()) == settings


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "redis://:password@cache.internal:6380/3",
        "rediss://user:password@cache.example.com:6380/0",
        "unix:///run/redis/redis.sock?db=1",
    ],
)
def test_redis_urls_in_the_forms_redis_py_takes(url: str) -> None:
    assert load(["--store", url], {}).store == url


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "http"], {}, "--port: expected an integer from 0 to 65535, got 'http'"),
        ([], {"TOPHOSTS_PORT": "70000"}, "TOPHOSTS_PORT: expected an integer from 0 to 65535"),
        (["--top", "0"], {}, "--top: expected an integer from 1 to 1000, got '0'"),
        (["--max-skew", "-1"], {}, "--max-skew: expected an integer from 0 to 86400"),
        (["--max-body", "lots"], {}, "--max-body: expected a size in bytes such as 8388608"),
        (["--max-body", "0"], {}, "--max-body: expected a size"),
        (["--log-level", "loud"], {}, "--log-level: expected one of critical, error"),
        (["--store", "mysql://x"], {}, "--store: expected 'memory', or a Redis URL"),
        (["--host", " "], {}, "--host: expected a non-empty value"),
        (["--store", "redis://cache:port/0"], {}, "--store: expected a valid Redis URL"),
        (["--redis-timeout", "0"], {}, "--redis-timeout: expected a number of seconds from 0.01"),
        (["--redis-timeout", "1s"], {}, "--redis-timeout: expected a number of seconds"),
        (["--redis-prefix", "my app"], {}, "--redis-prefix: expected 1 to 64 printable ASCII"),
        (["--workers", "0"], {}, "--workers: expected an integer from 1 to 64"),
        (["--idempotency-ttl", "0"], {}, "--idempotency-ttl: expected an integer from 1 to"),
        ([], {"TOPHOSTS_MAX_IDEMPOTENCY_KEYS": "lots"}, "TOPHOSTS_MAX_IDEMPOTENCY_KEYS: expected"),
        (["--workers", "2"], {}, "--workers: 2 workers need a shared store"),
        ([], {"TOPHOSTS_WORKERS": "3"}, "TOPHOSTS_WORKERS: 3 workers need a shared store"),
    ],
)
def test_bad_values_raise_one_clear_line(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load(argv, env)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("8388608", 8388608),
        ("8MiB", 8 * 1024**2),
        ("512 KiB", 512 * 1024),
        ("1kb", 1000),
        ("2M", 2_000_000),
    ],
)
def test_sizes_accept_units(text: str, size: int) -> None:
    assert load(["--max-body", text], {}).max_body == size
