"""The manifest and the program agree: the production Deployment's container, run as a
local process (tests/deploy/podlike.py), answers its probes and stops in time."""

from __future__ import annotations

import json

from tests.deploy.manifest_run import ManifestRun


def test_the_container_command_is_relay_run_with_the_mounted_config(
    manifest_run: ManifestRun,
) -> None:
    argv = manifest_run.spec.argv
    assert argv[0] == "relay" and argv[-1] == "run", argv
    config = argv[argv.index("--config") + 1]
    mount_path, _, name = config.rpartition("/")
    assert name in manifest_run.spec.files[mount_path], f"{config} is not a mounted file"


def test_the_startup_probe_passes_within_its_budget(manifest_run: ManifestRun) -> None:
    assert manifest_run.healthy_after_s is not None, (
        f"/healthz never answered 200 on port {manifest_run.spec.port} as {manifest_run.who}:"
        f"\n{manifest_run.log()}"
    )


def test_liveness_and_readiness_answer_200_on_the_manifest_port(
    manifest_run: ManifestRun,
) -> None:
    answers = manifest_run.answers
    assert set(answers) == {"/healthz", "/readyz"}, answers
    assert answers["/healthz"][0] == 200, answers
    status, body = answers["/readyz"]
    assert status == 200, f"/readyz: {status} {body}\n{manifest_run.log()}"
    # Redis (from the Secret's RELAY_REDIS__URL) answers: the environment reached relay.
    assert json.loads(body)["checks"] == {"rooms": True, "redis": True, "admin_rooms": True}


def test_the_secret_admin_token_guards_the_admin_api(manifest_run: ManifestRun) -> None:
    assert manifest_run.admin == {"with_token": 200, "without_token": 401, "add_room": 201}


def test_it_observes_a_room_with_tokens_minted_from_the_secret(manifest_run: ManifestRun) -> None:
    assert manifest_run.observed_after_s is not None, manifest_run.log()
    # SIGTERM left the room in order: what it received was written before the exit.
    assert manifest_run.room_events == ["observer.joined", "observer.left"], manifest_run.log()


def test_sigterm_ends_it_within_the_grace_period_after_the_pre_stop_pause(
    manifest_run: ManifestRun,
) -> None:
    spec = manifest_run.spec
    assert manifest_run.exit_after_s is not None, (
        f"still running {spec.grace_s} s after SIGTERM:\n{manifest_run.log()}"
    )
    # The grace period also counts the preStop pause, which comes before SIGTERM.
    assert manifest_run.exit_after_s < spec.grace_s - spec.pre_stop_s
    assert manifest_run.exit_code == 0, manifest_run.log()
    events = [json.loads(line)["event"] for line in manifest_run.log().splitlines() if line]
    assert "shutdown_requested" in events and events[-1] == "relay_stopped", events


def test_it_ran_on_a_read_only_root_with_a_writable_tmp(manifest_run: ManifestRun) -> None:
    # The same confinement as the relay's: writing beside the code fails, /tmp works.
    assert manifest_run.write_probe == {"venv": "EROFS", "tmp": "writable"}


def test_the_analytics_container_serves_its_metrics_and_stops_in_time(
    manifest_run: ManifestRun,
) -> None:
    analytics = manifest_run.analytics
    assert analytics is not None
    assert analytics.spec.argv[-1] == "analytics", analytics.spec.argv
    assert analytics.healthy_after_s is not None, analytics.log()
    assert "relay_sessions_total" in analytics.metrics_text, analytics.log()
    assert analytics.exit_after_s is not None and analytics.exit_code == 0, analytics.log()
    assert analytics.exit_after_s < analytics.spec.grace_s


def test_the_public_paths_are_served_and_refuse_the_unauthenticated(
    manifest_run: ManifestRun,
) -> None:
    # discovery.enabled (relay.env) serves the webhook, the Secret's ingest secret ingest
    # (off, both would answer 404): an empty JSON body is malformed, an unsigned webhook 401.
    assert manifest_run.public == {
        "/v1/forwarder.js": 200,
        "/v1/ingest": 400,
        "/v1/livekit/webhook": 401,
    }, manifest_run.log()


def test_with_workers_each_workers_series_carry_its_label_and_it_stops_in_time(
    manifest_run: ManifestRun,
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    supervised = manifest_run.supervised
    assert supervised is not None and supervised.metrics_text, (
        supervised.log() if supervised else ""
    )
    workers: dict[str, set[str]] = {}
    unlabelled = set()
    for family in text_string_to_metric_families(supervised.metrics_text):
        for sample in family.samples:
            worker = sample.labels.get("worker")
            if worker is None:
                unlabelled.add(sample.name)
            elif not sample.name.startswith("relay_worker_"):
                workers.setdefault(worker, set()).add(sample.name)
    assert unlabelled == {"relay_workers"}  # every other sample is a worker's, or about one
    assert set(workers) == {"0", "1"}
    always = {  # unlabelled or with every label value from the start
        "relay_buffer_events",
        "relay_leases_held",
        "relay_events_dropped_total",
        "relay_event_loop_lag_seconds_bucket",
        "process_cpu_seconds_total",
        "relay_build_info",
    }
    assert always <= workers["0"] and always <= workers["1"]
    assert supervised.exit_after_s is not None and supervised.exit_code == 0, supervised.log()
    assert supervised.exit_after_s < supervised.spec.grace_s - supervised.spec.pre_stop_s
