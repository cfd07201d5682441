"""The alerts' pure parts: what counts as a secret in a notification URL, the start-up line, the circuit breaker's
listener (each opening and closing told once, a failing listener harmless), and the events' wording."""

from __future__ import annotations

import pytest

from app.core.config import ExplicitSettings, split_urls, url_secret_parts
from app.services.alerts.delivery import AppriseDelivery
from app.services.alerts.events import AlertKind, RecordingAlerts, account_status, circuit
from app.services.llm.circuit_breaker import CircuitBreaker, CircuitBreakerRegistry


@pytest.mark.parametrize(
    ("url", "secret", "readable"),
    [
        ("tgram://123456789:AAHsecretTOKENxyz/555", ["AAHsecretTOKENxyz", "123456789"], []),
        ("discord://1234567890/abcDEFghiJKLmnoPQRstu", ["abcDEFghiJKLmnoPQRstu"], []),
        ("mailto://alerts:pa55word@smtp.example.com", ["pa55word", "alerts"], ["smtp.example.com"]),
        ("json://127.0.0.1:8080/hook?token=abcdTOKEN", ["abcdTOKEN"], ["127.0.0.1", "8080", "hook"]),
    ],
)
def test_secret_parts_of_a_url(url: str, secret: list[str], readable: list[str]) -> None:
    parts = url_secret_parts(url)
    assert set(secret) <= set(parts)
    assert not set(readable) & set(parts)


def test_alert_urls_are_a_secret_setting_split_on_commas_and_spaces() -> None:
    settings = ExplicitSettings(alert_urls="json://127.0.0.1:1/a, tgram://123456789:AAHsecretTOKENxyz/555\nntfy://x")
    assert settings.alert_url_list == ["json://127.0.0.1:1/a", "tgram://123456789:AAHsecretTOKENxyz/555", "ntfy://x"]
    assert "AAHsecretTOKENxyz" in settings.secret_values()  # redacted from every log line
    assert "AAHsecretTOKENxyz" not in repr(settings)
    assert split_urls("  ") == []


def test_the_start_up_line_names_schemes_and_refused_urls_never_a_url() -> None:
    delivery = AppriseDelivery(["json://127.0.0.1:1/a", "tgram://123456789:AAHsecretTOKENxyz/555", "nope://x"])
    line = delivery.describe()
    assert line == "apprise to 2 URL(s) (schemes: json, tgram); 1 URL(s) not understood by apprise (schemes: nope)"
    assert delivery.configured
    assert delivery.scrub("sent to tgram://123456789:AAHsecretTOKENxyz/555 failed") == "sent to *** failed"
    assert not AppriseDelivery(["nope://x"]).configured


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_tells_each_opening_and_closing_once() -> None:
    told: list[tuple[str, str, str]] = []
    clock = Clock()
    registry = CircuitBreakerRegistry(
        failure_threshold=2, recovery_timeout_s=10, clock=clock, on_change=lambda k, s, w: told.append((k, s, w))
    )
    registry.record_failure("m")
    assert told == []
    registry.record_failure("m")
    assert [(k, s) for k, s, _ in told] == [("m", "open")] and "2 consecutive failures" in told[0][2]
    registry.record_failure("m")  # a late report while open: nothing new
    clock.now = 11
    assert registry.allow("m")  # half-open trial
    registry.record_failure("m")
    assert [s for _, s, _ in told] == ["open", "open"] and "trial call failed" in told[1][2]
    clock.now = 22
    assert registry.allow("m")
    registry.record_success("m")
    assert [s for _, s, _ in told] == ["open", "open", "closed"]
    registry.get("m").reset()  # already closed: nothing to tell
    registry.record_success("m")
    assert len(told) == 3


def test_a_failing_listener_does_not_change_the_breaker() -> None:
    def broken(_state: str, _why: str) -> None:
        raise RuntimeError("listener bug")

    breaker = CircuitBreaker(1, 10, clock=Clock(), on_change=broken)
    breaker.record_failure()
    assert breaker.state == "open"


def test_events_say_who_and_why() -> None:
    halted = account_status(3, "HALTED", by="admin API key ta_admin_abc...", reason="drawdown")
    assert (halted.kind, halted.subject, halted.severity, halted.account_id) == (
        AlertKind.ACCOUNT_HALTED,
        "account 3",
        "critical",
        3,
    )
    assert "by admin API key ta_admin_abc..." in halted.message and "Reason: drawdown" in halted.message
    paused = account_status(3, "PAUSED", by="rule", reason=None)
    assert paused.kind == AlertKind.ACCOUNT_PAUSED and "none given" in paused.message
    opened, closed = circuit("x/y", True, "why"), circuit("x/y", False, "why")
    assert opened.subject == closed.subject == "model x/y" and opened.kind != closed.kind
    sink = RecordingAlerts()
    sink.emit(opened)
    assert sink.kinds() == [AlertKind.CIRCUIT_OPEN]
