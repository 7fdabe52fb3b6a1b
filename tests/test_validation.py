"""Tests for enqueue-time validation: bad input raises ValidationError and nothing reaches Redis.

Limits come from Customer.io (docs/customerio-api.md §6), written out here rather than read from
cio_worker.validation, so a changed constant shows up as a failing test.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from typing import Any

import pytest
import redis

from cio_worker import validation as v
from cio_worker.config import Settings
from cio_worker.errors import CioWorkerError, ValidationError
from cio_worker.produce._producer import Producer

# 2024-01-01T00:00:00Z in Unix seconds.
NEW_YEAR_2024 = 1_704_067_200

Rejects = Callable[..., contextlib.AbstractContextManager[None]]


@pytest.fixture
def producer(settings: Settings) -> Producer:
    """A producer writing to the real test Redis."""
    return Producer(settings)


@pytest.fixture
def rejects(redis_client: redis.Redis) -> Rejects:
    """`with rejects("field", "rule words"):` - the block raises a well-formed ValidationError
    about `field` (whose rule contains each given word) and Redis stays empty."""

    @contextlib.contextmanager
    def check(field: str, *words: str) -> Iterator[None]:
        assert redis_client.dbsize() == 0
        with pytest.raises(ValidationError) as info:
            yield
        error = info.value
        assert isinstance(error, ValueError)
        assert isinstance(error, CioWorkerError)
        assert error.field == field
        assert error.rule
        assert error.field in str(error)
        assert error.rule in str(error)
        for word in words:
            assert word.lower() in error.rule.lower(), (word, error.rule)
        assert redis_client.dbsize() == 0

    return check


def stored_payload(client: redis.Redis, job_id: str) -> dict[str, Any]:
    return json.loads(client.hget(f"cio:job:{job_id}", "job"))["payload"]  # type: ignore[arg-type]


class TestValidationError:
    def test_is_value_error_with_field_and_rule(self) -> None:
        """ValidationError is a ValueError carrying `.field` and `.rule`, both in its message."""
        error = ValidationError("traits.plan", "must be short")
        assert isinstance(error, ValueError)
        assert (error.field, error.rule) == ("traits.plan", "must be short")
        assert "traits.plan" in str(error) and "must be short" in str(error)


class TestPersonIds:
    @pytest.mark.parametrize("value", ["", " ", "\t\n"])
    def test_empty_user_id(self, producer: Producer, rejects: Rejects, value: str) -> None:
        """An empty or whitespace-only user id is rejected."""
        with rejects("user_id", "empty"):
            producer.enqueue_identify(value)

    @pytest.mark.parametrize("method", ["enqueue_delete", "enqueue_suppress", "enqueue_unsuppress"])
    def test_empty_id_for_person_only_kinds(
        self, producer: Producer, rejects: Rejects, method: str
    ) -> None:
        """Delete, suppress and unsuppress reject an empty user id."""
        with rejects("user_id", "empty"):
            getattr(producer, method)("  ")

    def test_empty_anonymous_id(self, producer: Producer, rejects: Rejects) -> None:
        """An anonymous event needs a non-empty anonymous id."""
        with rejects("anonymous_id", "empty"):
            producer.enqueue_track_anonymous("", "Viewed")

    def test_multibyte_id_over_150_bytes(self, producer: Producer, rejects: Rejects) -> None:
        """76 x 'é' is 76 characters but 152 UTF-8 bytes, over the 150-byte limit."""
        with rejects("user_id", "150"):
            producer.enqueue_track("é" * 76, "Signed Up")

    def test_multibyte_id_at_150_bytes(self, producer: Producer, redis_client: redis.Redis) -> None:
        """75 x 'é' (exactly 150 bytes) is accepted and stored unchanged."""
        job_id = producer.enqueue_track("é" * 75, "Signed Up")
        assert stored_payload(redis_client, job_id)["user_id"] == "é" * 75

    def test_ascii_id_over_limit(self, producer: Producer, rejects: Rejects) -> None:
        """A 151-character ASCII id is rejected."""
        with rejects("user_id", "150"):
            producer.enqueue_delete("x" * 151)

    def test_ascii_id_at_limit(self, producer: Producer, redis_client: redis.Redis) -> None:
        """A 150-character ASCII id is accepted."""
        job_id = producer.enqueue_delete("x" * 150)
        assert stored_payload(redis_client, job_id)["user_id"] == "x" * 150

    @pytest.mark.parametrize("value", [None, True, 1.5, ["u"], {"id": "u"}])
    def test_wrong_type(self, producer: Producer, rejects: Rejects, value: object) -> None:
        """A user id must be a string or an int (not None, a bool, a float or a container)."""
        with rejects("user_id"):
            producer.enqueue_identify(value)  # type: ignore[arg-type]

    def test_int_id_stored_as_text(self, producer: Producer, redis_client: redis.Redis) -> None:
        """An int user id is accepted and stored as its decimal text."""
        job_id = producer.enqueue_identify(42)
        assert stored_payload(redis_client, job_id)["user_id"] == "42"

    def test_empty_device_id(self, producer: Producer, rejects: Rejects) -> None:
        """A device id must not be empty."""
        with rejects("device_id", "empty"):
            producer.enqueue_remove_device("u-1", "")


class TestEventNames:
    @pytest.mark.parametrize("value", ["", "   "])
    def test_empty(self, producer: Producer, rejects: Rejects, value: str) -> None:
        """An empty or blank event name is rejected."""
        with rejects("event", "empty"):
            producer.enqueue_track("u-1", value)

    def test_over_100_bytes(self, producer: Producer, rejects: Rejects) -> None:
        """An event name of 101 bytes is rejected."""
        with rejects("event", "100"):
            producer.enqueue_track("u-1", "e" * 101)

    def test_multibyte_over_100_bytes(self, producer: Producer, rejects: Rejects) -> None:
        """51 x 'é' is 102 bytes: rejected though only 51 characters."""
        with rejects("event", "100"):
            producer.enqueue_track_anonymous("a-1", "é" * 51)

    @pytest.mark.parametrize("name", ["e" * 100, "é" * 50])
    def test_at_limit(self, producer: Producer, redis_client: redis.Redis, name: str) -> None:
        """An event name of exactly 100 bytes is accepted and stored as given."""
        job_id = producer.enqueue_track("u-1", name)
        assert stored_payload(redis_client, job_id)["event"] == name

    def test_not_a_string(self, producer: Producer, rejects: Rejects) -> None:
        """An event name must be a string."""
        with rejects("event", "string"):
            producer.enqueue_track("u-1", 123)  # type: ignore[arg-type]

    def test_page_url_empty(self, producer: Producer, rejects: Rejects) -> None:
        """A page view needs a URL."""
        with rejects("url", "empty"):
            producer.enqueue_page("u-1", "")

    def test_page_url_over_100_bytes(self, producer: Producer, rejects: Rejects) -> None:
        """A page URL is an event name, so it is capped at 100 bytes too."""
        with rejects("url", "100"):
            producer.enqueue_page("u-1", "https://example.com/" + "p" * 81)


class TestTimestamps:
    def test_iso_string_rejected(self, producer: Producer, rejects: Rejects) -> None:
        """An ISO-8601 string is refused with a message pointing at Unix seconds."""
        with rejects("timestamp", "unix seconds"):
            producer.enqueue_track("u-1", "Signed Up", timestamp="2024-01-01T00:00:00Z")  # type: ignore[arg-type]

    def test_naive_datetime_rejected(self, producer: Producer, rejects: Rejects) -> None:
        """A datetime without a timezone is refused as ambiguous."""
        with rejects("timestamp", "timezone"):
            producer.enqueue_identify("u-1", timestamp=datetime(2024, 1, 1))

    def test_aware_datetime_converted(self, producer: Producer, redis_client: redis.Redis) -> None:
        """An aware datetime is stored as int Unix seconds of the same instant."""
        local = datetime(2024, 1, 1, 2, 0, 0, 999_000, tzinfo=timezone(timedelta(hours=2)))
        job_id = producer.enqueue_track("u-1", "Signed Up", timestamp=local)
        stored = stored_payload(redis_client, job_id)["timestamp"]
        assert stored == NEW_YEAR_2024
        assert type(stored) is int

    def test_int_kept(self, producer: Producer, redis_client: redis.Redis) -> None:
        """An int timestamp in Unix seconds is stored unchanged."""
        job_id = producer.enqueue_identify("u-1", timestamp=NEW_YEAR_2024)
        assert stored_payload(redis_client, job_id)["timestamp"] == NEW_YEAR_2024

    def test_none_means_now(self, producer: Producer, redis_client: redis.Redis) -> None:
        """Without a timestamp the job stores null (Customer.io uses its receive time)."""
        job_id = producer.enqueue_track("u-1", "Signed Up")
        assert stored_payload(redis_client, job_id)["timestamp"] is None

    def test_milliseconds_rejected(self, producer: Producer, rejects: Rejects) -> None:
        """A millisecond timestamp (13 digits) is refused."""
        with rejects("timestamp", "milliseconds"):
            producer.enqueue_track("u-1", "Signed Up", timestamp=NEW_YEAR_2024 * 1000)

    @pytest.mark.parametrize("value", [True, False])
    def test_bool_rejected(self, producer: Producer, rejects: Rejects, value: bool) -> None:
        """A bool is not taken for 1 or 0."""
        with rejects("timestamp"):
            producer.enqueue_track("u-1", "Signed Up", timestamp=value)

    @pytest.mark.parametrize("value", [-1, float(NEW_YEAR_2024), "1704067200"])
    def test_other_bad_values(self, producer: Producer, rejects: Rejects, value: object) -> None:
        """Negative ints, floats and numeric strings are refused."""
        with rejects("timestamp"):
            producer.enqueue_identify("u-1", timestamp=value)  # type: ignore[arg-type]

    def test_device_last_used_checked(self, producer: Producer, rejects: Rejects) -> None:
        """A device's `last_used` follows the same timestamp rules."""
        with rejects("last_used", "unix seconds"):
            producer.enqueue_add_device("u-1", "tok", "ios", last_used="2024-01-01")  # type: ignore[arg-type]

    def test_page_timestamp_checked(self, producer: Producer, rejects: Rejects) -> None:
        """A page view's timestamp follows the same rules."""
        with rejects("timestamp", "timezone"):
            producer.enqueue_page("u-1", "https://x.test/", timestamp=datetime(2024, 1, 1))


class TestJsonValues:
    @pytest.mark.parametrize(
        ("bad", "words"),
        [
            ({"a", "b"}, ("set",)),
            (b"raw", ("bytes",)),
            (object(), ("object",)),
            (float("nan"), ("nan",)),
            (float("inf"), ("infinity",)),
            (datetime(2024, 1, 1, tzinfo=UTC), ("datetime",)),
        ],
    )
    def test_non_json_property(
        self, producer: Producer, rejects: Rejects, bad: object, words: tuple[str, ...]
    ) -> None:
        """A non-JSON property value is rejected, naming its dotted path."""
        with rejects("properties.bad", *words):
            producer.enqueue_track("u-1", "Signed Up", {"ok": 1, "bad": bad})

    def test_nested_path_named(self, producer: Producer, rejects: Rejects) -> None:
        """The path names nested keys and list positions."""
        with rejects("properties.order.items[1].sku"):
            producer.enqueue_track(
                "u-1", "Ordered", {"order": {"items": [{"sku": "a"}, {"sku": b"b"}]}}
            )

    def test_non_string_key_top_level(self, producer: Producer, rejects: Rejects) -> None:
        """A non-string key at the top level names the argument."""
        with rejects("properties", "keys must be strings"):
            producer.enqueue_track("u-1", "Signed Up", {1: "one"})  # type: ignore[dict-item]

    def test_non_string_key_nested(self, producer: Producer, rejects: Rejects) -> None:
        """A non-string key deeper down names the dict that holds it."""
        with rejects("traits.prefs", "keys must be strings"):
            producer.enqueue_identify("u-1", {"prefs": {("a", "b"): True}})

    def test_traits_set_rejected(self, producer: Producer, rejects: Rejects) -> None:
        """Identify traits are checked the same way."""
        with rejects("traits.tags", "set"):
            producer.enqueue_identify("u-1", {"tags": {"x"}})

    def test_message_data_checked(self, producer: Producer, rejects: Rejects) -> None:
        """Transactional message data is checked the same way."""
        with rejects("message_data.code", "nan"):
            producer.enqueue_send_email(
                1, identifiers={"id": "u-1"}, message_data={"code": math.nan}
            )

    def test_broadcast_data_checked(self, producer: Producer, rejects: Rejects) -> None:
        """Broadcast data is checked the same way."""
        with rejects("data.blob", "bytes"):
            producer.enqueue_broadcast(1, data={"blob": b"\x00"})

    def test_properties_must_be_a_dict(self, producer: Producer, rejects: Rejects) -> None:
        """Event properties must be a dict, not a list."""
        with rejects("properties", "dict"):
            producer.enqueue_track("u-1", "Signed Up", [1, 2])  # type: ignore[arg-type]

    def test_plain_json_accepted(self, producer: Producer, redis_client: redis.Redis) -> None:
        """Every JSON type, nested, is accepted; tuples become lists."""
        props = {"s": "x", "i": 1, "f": 1.5, "b": False, "n": None, "l": [1, {"k": "v"}]}
        job_id = producer.enqueue_track("u-1", "Signed Up", {**props, "t": (1, 2)})
        assert stored_payload(redis_client, job_id)["properties"] == {**props, "t": [1, 2]}

    def test_nested_non_dict_mapping(self, producer: Producer, redis_client: redis.Redis) -> None:
        """A nested read-only mapping is either stored as an object or a ValidationError."""
        try:
            job_id = producer.enqueue_track(
                "u-1", "Signed Up", {"nested": MappingProxyType({"a": 1})}
            )
        except ValidationError:
            assert redis_client.dbsize() == 0
        else:
            assert stored_payload(redis_client, job_id)["properties"] == {"nested": {"a": 1}}


class TestSizes:
    def test_attribute_value_over_1000_bytes(self, producer: Producer, rejects: Rejects) -> None:
        """A string attribute of 1001 bytes is rejected, naming the attribute."""
        with rejects("traits.bio", "1000"):
            producer.enqueue_identify("u-1", {"bio": "b" * 1001})

    def test_multibyte_attribute_value(self, producer: Producer, rejects: Rejects) -> None:
        """Attribute size counts UTF-8 bytes: 501 x 'é' is 1002 bytes."""
        with rejects("traits.bio", "1000"):
            producer.enqueue_identify("u-1", {"bio": "é" * 501})

    def test_encoded_attribute_value(self, producer: Producer, rejects: Rejects) -> None:
        """A non-string attribute is measured as JSON."""
        with rejects("traits.scores", "1000"):
            producer.enqueue_identify("u-1", {"scores": list(range(400))})

    def test_attribute_value_at_limit(self, producer: Producer, redis_client: redis.Redis) -> None:
        """A 1000-byte attribute value is accepted."""
        job_id = producer.enqueue_identify("u-1", {"bio": "b" * 1000})
        assert stored_payload(redis_client, job_id)["traits"] == {"bio": "b" * 1000}

    def test_device_attributes_checked(self, producer: Producer, rejects: Rejects) -> None:
        """Device attributes follow the attribute size rule."""
        with rejects("attributes.model", "1000"):
            producer.enqueue_add_device("u-1", "tok", "android", attributes={"model": "m" * 1001})

    def test_attribute_name_over_150_bytes(self, producer: Producer, rejects: Rejects) -> None:
        """An attribute name longer than 150 bytes is rejected."""
        with rejects(f"traits.{'n' * 40}", "150"):
            producer.enqueue_identify("u-1", {"n" * 151: 1})

    def test_empty_attribute_name(self, producer: Producer, rejects: Rejects) -> None:
        """An empty attribute name is rejected."""
        with rejects("traits", "empty"):
            producer.enqueue_identify("u-1", {"": 1})

    def test_more_than_300_attributes(self, producer: Producer, rejects: Rejects) -> None:
        """301 attributes in one identify are rejected."""
        with rejects("traits", "300"):
            producer.enqueue_identify("u-1", {f"a{n}": n for n in range(301)})

    def test_300_attributes_accepted(self, producer: Producer, redis_client: redis.Redis) -> None:
        """Exactly 300 attributes are accepted."""
        job_id = producer.enqueue_identify("u-1", {f"a{n}": n for n in range(300)})
        assert len(stored_payload(redis_client, job_id)["traits"]) == 300

    def test_event_data_over_100_000_bytes(self, producer: Producer, rejects: Rejects) -> None:
        """Event data over 100,000 bytes as JSON is rejected, naming `properties`."""
        with rejects("properties", "100000"):
            producer.enqueue_track("u-1", "Big", {"blob": "x" * 100_000})

    def test_operation_over_32_kb(self, producer: Producer, rejects: Rejects) -> None:
        """A Track operation over 32 KB is rejected even when its event data is under 100 KB."""
        with rejects("payload", str(32 * 1024)):
            producer.enqueue_track("u-1", "Big", {"blob": "x" * (32 * 1024)})

    def test_identify_over_32_kb(self, producer: Producer, rejects: Rejects) -> None:
        """Many attributes each within limits can still exceed one 32 KB operation."""
        with rejects("payload", str(32 * 1024)):
            producer.enqueue_identify("u-1", {f"a{n}": "v" * 900 for n in range(40)})

    def test_operation_just_under_32_kb(
        self, producer: Producer, redis_client: redis.Redis
    ) -> None:
        """An event whose whole operation stays under 32 KB is accepted."""
        job_id = producer.enqueue_track("u-1", "Big", {"blob": "x" * 30_000})
        assert len(stored_payload(redis_client, job_id)["properties"]["blob"]) == 30_000


class TestMerge:
    @pytest.mark.parametrize(
        "reference",
        [{}, {"id": "a", "email": "a@x.test"}, {"id": "a", "cio_id": "c1"}, {"id": None}],
    )
    def test_primary_needs_exactly_one_key(
        self, producer: Producer, rejects: Rejects, reference: dict[str, Any]
    ) -> None:
        """A person reference must hold exactly one of id, email, cio_id."""
        with rejects("primary", "exactly one"):
            producer.enqueue_merge(reference, "b")

    def test_secondary_checked(self, producer: Producer, rejects: Rejects) -> None:
        """The secondary reference is checked the same way."""
        with rejects("secondary", "exactly one"):
            producer.enqueue_merge("a", {"email": "b@x.test", "cio_id": "c2"})

    def test_unknown_key(self, producer: Producer, rejects: Rejects) -> None:
        """Keys other than id, email and cio_id are rejected."""
        with rejects("primary", "phone"):
            producer.enqueue_merge({"phone": "+15550100"}, "b")

    @pytest.mark.parametrize(("primary", "secondary"), [("a", "a"), ("a", {"id": "a"}), (7, "7")])
    def test_same_person(
        self, producer: Producer, rejects: Rejects, primary: object, secondary: object
    ) -> None:
        """Merging a person into themselves is rejected."""
        with rejects("secondary", "differ"):
            producer.enqueue_merge(primary, secondary)  # type: ignore[arg-type]

    def test_empty_id_in_reference(self, producer: Producer, rejects: Rejects) -> None:
        """An id inside a reference obeys the id rules."""
        with rejects("primary.email", "empty"):
            producer.enqueue_merge({"email": "  "}, "b")

    def test_valid_merge_stored(self, producer: Producer, redis_client: redis.Redis) -> None:
        """A shorthand id and an email reference are stored as explicit references."""
        job_id = producer.enqueue_merge("a", {"email": "b@x.test"})
        assert stored_payload(redis_client, job_id) == {
            "primary": {"id": "a"},
            "secondary": {"email": "b@x.test"},
        }


class TestDevices:
    @pytest.mark.parametrize("platform", ["windows", "", None, "web"])
    def test_platform(self, producer: Producer, rejects: Rejects, platform: object) -> None:
        """The platform must be ios or android."""
        with rejects("platform", "ios", "android"):
            producer.enqueue_add_device("u-1", "tok", platform)  # type: ignore[arg-type]

    @pytest.mark.parametrize("platform", ["ios", "android"])
    def test_valid_platforms(
        self, producer: Producer, redis_client: redis.Redis, platform: str
    ) -> None:
        """ios and android are accepted and stored."""
        job_id = producer.enqueue_add_device("u-1", "tok", platform)
        assert stored_payload(redis_client, job_id)["platform"] == platform


class TestTransactional:
    def test_identifiers_required(self, producer: Producer, rejects: Rejects) -> None:
        """A transactional email without identifiers is rejected."""
        with rejects("identifiers", "required"):
            producer.enqueue_send_email(1, identifiers={}, to="a@x.test")

    def test_identifiers_none(self, producer: Producer, rejects: Rejects) -> None:
        """`identifiers=None` is rejected the same way."""
        with rejects("identifiers", "required"):
            producer.enqueue_send_email(1, identifiers=None)  # type: ignore[arg-type]

    def test_identifiers_need_one_key(self, producer: Producer, rejects: Rejects) -> None:
        """Identifiers hold exactly one of id, email, cio_id."""
        with rejects("identifiers", "exactly one"):
            producer.enqueue_send_email(1, identifiers={"id": "u", "email": "u@x.test"})

    @pytest.mark.parametrize("value", [0, -4, True, "", "  ", None, 1.5])
    def test_message_id(self, producer: Producer, rejects: Rejects, value: object) -> None:
        """The message id must be a positive int or a non-empty trigger name."""
        with rejects("transactional_message_id"):
            producer.enqueue_send_email(value, identifiers={"id": "u"})  # type: ignore[arg-type]

    def test_unknown_field(self, producer: Producer, rejects: Rejects) -> None:
        """An extra keyword that is not an App API email field is rejected by name."""
        with rejects("subjekt", "not a field"):
            producer.enqueue_send_email(1, identifiers={"id": "u"}, subjekt="Hi")

    def test_from_underscore_mapped(self, producer: Producer, redis_client: redis.Redis) -> None:
        """`from_` (Python keyword workaround) is sent as `from`."""
        job_id = producer.enqueue_send_email(
            1, identifiers={"id": "u"}, to="u@x.test", from_="Shop <shop@x.test>", subject="Hi"
        )
        payload = stored_payload(redis_client, job_id)
        assert payload["from"] == "Shop <shop@x.test>"
        assert "from_" not in payload
        assert payload["subject"] == "Hi"

    def test_field_value_must_be_json(self, producer: Producer, rejects: Rejects) -> None:
        """Extra field values must be JSON."""
        with rejects("headers", "set"):
            producer.enqueue_send_email(1, identifiers={"id": "u"}, headers={"X-A"})

    def test_more_than_15_recipients(self, producer: Producer, rejects: Rejects) -> None:
        """16 recipients across to (comma list), cc (list) and bcc (comma list) are rejected."""
        to = ",".join(f"to{n}@x.test" for n in range(10))
        cc = [f"cc{n}@x.test" for n in range(3)]
        bcc = "b0@x.test, b1@x.test,b2@x.test"
        with rejects("to", "15"):
            producer.enqueue_send_email(1, identifiers={"id": "u"}, to=to, cc=cc, bcc=bcc)

    def test_15_recipients_accepted(self, producer: Producer, redis_client: redis.Redis) -> None:
        """Exactly 15 recipients across to, cc and bcc are accepted."""
        to = ",".join(f"to{n}@x.test" for n in range(10))
        cc = [f"cc{n}@x.test" for n in range(3)]
        job_id = producer.enqueue_send_email(
            1, identifiers={"id": "u"}, to=to, cc=cc, bcc="b0@x.test,b1@x.test"
        )
        assert stored_payload(redis_client, job_id)["cc"] == cc

    def test_push_accepts_push_fields(self, producer: Producer, redis_client: redis.Redis) -> None:
        """A push takes push fields such as title, message and link."""
        job_id = producer.enqueue_send_push(
            "welcome", identifiers={"cio_id": "c1"}, title="Hi", message="Yo", link="app://x"
        )
        payload = stored_payload(redis_client, job_id)
        assert payload["transactional_message_id"] == "welcome"
        assert payload["identifiers"] == {"cio_id": "c1"}
        assert (payload["title"], payload["message"], payload["link"]) == ("Hi", "Yo", "app://x")

    def test_push_rejects_email_fields(self, producer: Producer, rejects: Rejects) -> None:
        """An email-only field is not a push field."""
        with rejects("subject", "not a field"):
            producer.enqueue_send_push(2, identifiers={"id": "u"}, subject="Hi")

    def test_email_rejects_push_fields(self, producer: Producer, rejects: Rejects) -> None:
        """A push-only field is not an email field."""
        with rejects("title", "not a field"):
            producer.enqueue_send_email(2, identifiers={"id": "u"}, title="Hi")

    def test_sms_accepted(self, producer: Producer, redis_client: redis.Redis) -> None:
        """An SMS with identifiers, message data and `to` is stored."""
        job_id = producer.enqueue_send_sms(
            3, identifiers={"id": "u"}, to="+15550100", message_data={"code": "1234"}
        )
        payload = stored_payload(redis_client, job_id)
        assert payload["to"] == "+15550100"
        assert payload["message_data"] == {"code": "1234"}

    def test_sms_rejects_push_fields(self, producer: Producer, rejects: Rejects) -> None:
        """An SMS does not take push fields."""
        with rejects("title", "not a field"):
            producer.enqueue_send_sms(3, identifiers={"id": "u"}, title="Hi")

    def test_sms_needs_identifiers(self, producer: Producer, rejects: Rejects) -> None:
        """An SMS without identifiers is rejected."""
        with rejects("identifiers", "required"):
            producer.enqueue_send_sms(3, identifiers={})

    def test_push_needs_identifiers(self, producer: Producer, rejects: Rejects) -> None:
        """A push without identifiers is rejected."""
        with rejects("identifiers", "required"):
            producer.enqueue_send_push(3, identifiers={})


class TestBroadcast:
    def test_two_audience_keys(self, producer: Producer, redis_client: redis.Redis) -> None:
        """Two audience keys are rejected, naming both, and nothing is stored."""
        with pytest.raises(ValidationError) as info:
            producer.enqueue_broadcast(1, ids=["u"], emails=["a@x.test"])
        assert "ids" in info.value.field and "emails" in info.value.field
        assert "one audience" in info.value.rule
        assert redis_client.dbsize() == 0

    @pytest.mark.parametrize("value", [0, -1, True, "12", 1.5, None])
    def test_broadcast_id(self, producer: Producer, rejects: Rejects, value: object) -> None:
        """The broadcast id must be a positive int."""
        with rejects("broadcast_id", "positive int"):
            producer.enqueue_broadcast(value)  # type: ignore[arg-type]

    @pytest.mark.parametrize("key", ["ids", "emails", "per_user_data"])
    def test_empty_list(self, producer: Producer, rejects: Rejects, key: str) -> None:
        """An empty audience list is rejected (it would be ignored, not mean nobody)."""
        with rejects(key, "non-empty"):
            producer.enqueue_broadcast(1, **{key: []})

    def test_over_10_000_ids(self, producer: Producer, rejects: Rejects) -> None:
        """More than 10,000 ids are rejected."""
        with rejects("ids", "10000"):
            producer.enqueue_broadcast(1, ids=list(range(10_001)))

    def test_10_000_ids_accepted(self, producer: Producer, redis_client: redis.Redis) -> None:
        """Exactly 10,000 ids are accepted."""
        job_id = producer.enqueue_broadcast(1, ids=list(range(10_000)))
        assert len(stored_payload(redis_client, job_id)["body"]["ids"]) == 10_000

    def test_over_10_000_per_user_data(self, producer: Producer, rejects: Rejects) -> None:
        """More than 10,000 per-user entries are rejected."""
        with rejects("per_user_data", "10000"):
            producer.enqueue_broadcast(1, per_user_data=[{"id": n} for n in range(1, 10_002)])

    @pytest.mark.parametrize("entry", [{"data": {"a": 1}}, {"id": "", "data": {}}, "u-2"])
    def test_per_user_data_entry(self, producer: Producer, rejects: Rejects, entry: object) -> None:
        """Each per-user entry needs an id or an email; the bad entry's index is named."""
        with rejects("per_user_data[1]", "id or an email"):
            producer.enqueue_broadcast(1, per_user_data=[{"id": "u-1"}, entry])  # type: ignore[list-item]

    def test_empty_recipients_filter(self, producer: Producer, rejects: Rejects) -> None:
        """An empty recipients filter is rejected (Customer.io answers 422)."""
        with rejects("recipients", "non-empty"):
            producer.enqueue_broadcast(1, recipients={})

    def test_flag_must_be_bool(self, producer: Producer, rejects: Rejects) -> None:
        """Broadcast flags must be bools."""
        with rejects("id_ignore_missing", "bool"):
            producer.enqueue_broadcast(1, ids=["u"], id_ignore_missing="yes")  # type: ignore[arg-type]

    def test_valid_broadcast_stored(self, producer: Producer, redis_client: redis.Redis) -> None:
        """A broadcast with data, one audience and a flag stores exactly those."""
        job_id = producer.enqueue_broadcast(
            9,
            data={"promo": "spring"},
            per_user_data=[{"email": "a@x.test"}],
            id_ignore_missing=True,
        )
        assert stored_payload(redis_client, job_id) == {
            "broadcast_id": 9,
            "body": {
                "data": {"promo": "spring"},
                "per_user_data": [{"email": "a@x.test"}],
                "id_ignore_missing": True,
            },
        }

    def test_no_audience_allowed(self, producer: Producer, redis_client: redis.Redis) -> None:
        """No audience key means the broadcast's own audience: accepted."""
        job_id = producer.enqueue_broadcast(9)
        assert stored_payload(redis_client, job_id) == {"broadcast_id": 9, "body": {}}


class TestHelpers:
    """The validation helpers, called directly."""

    def test_identifier_returns_text(self) -> None:
        """`identifier` returns the id as text, ints included."""
        assert v.identifier("user_id", 12) == "12"
        assert v.identifier("user_id", "ü") == "ü"

    def test_identifier_custom_limit(self) -> None:
        """`identifier` honours a custom byte limit."""
        assert v.identifier("device_id", "d" * 1000, max_bytes=1000) == "d" * 1000
        with pytest.raises(ValidationError) as info:
            v.identifier("device_id", "d" * 1001, max_bytes=1000)
        assert info.value.field == "device_id"

    @pytest.mark.parametrize(
        ("value", "ok"), [("é" * 75, True), ("é" * 76, False), ("x" * 150, True), ("", False)]
    )
    def test_identifier_bytes(self, value: str, ok: bool) -> None:
        """`identifier` counts UTF-8 bytes against 150."""
        if ok:
            assert v.identifier("id", value) == value
        else:
            with pytest.raises(ValidationError):
                v.identifier("id", value)

    def test_event_name_keeps_case(self) -> None:
        """`event_name` returns the name unchanged."""
        assert v.event_name("event", "Mixed Case Name") == "Mixed Case Name"

    @pytest.mark.parametrize("value", ["", " ", "x" * 101, None])
    def test_event_name_rejects(self, value: object) -> None:
        """`event_name` rejects empty, over-long and non-string names."""
        with pytest.raises(ValidationError) as info:
            v.event_name("event", value)
        assert info.value.field == "event"

    def test_timestamp_conversions(self) -> None:
        """`timestamp` passes ints and None through and converts aware datetimes."""
        assert v.timestamp("t", None) is None
        assert v.timestamp("t", NEW_YEAR_2024) == NEW_YEAR_2024
        assert v.timestamp("t", datetime(2024, 1, 1, tzinfo=UTC)) == NEW_YEAR_2024
        assert v.timestamp("t", 0) == 0

    @pytest.mark.parametrize(
        "value",
        ["2024-01-01T00:00:00+00:00", datetime(2024, 1, 1), NEW_YEAR_2024 * 1000, True, 1.0],
    )
    def test_timestamp_rejects(self, value: object) -> None:
        """`timestamp` rejects strings, naive datetimes, milliseconds, bools and floats."""
        with pytest.raises(ValidationError) as info:
            v.timestamp("ts", value)
        assert info.value.field == "ts"

    @pytest.mark.parametrize(
        ("value", "field"),
        [
            ({"a": [1, {"b": {1}}]}, "p.a[1].b"),
            ([0, 1, b"x"], "p[2]"),
            ({"a": float("-inf")}, "p.a"),
            ({"a": {2: 1}}, "p.a"),
            (object(), "p"),
        ],
    )
    def test_json_value_path(self, value: object, field: str) -> None:
        """`json_value` names the dotted path of the first non-JSON value."""
        with pytest.raises(ValidationError) as info:
            v.json_value("p", value)
        assert info.value.field == field

    def test_json_value_accepts_json(self) -> None:
        """`json_value` accepts every plain JSON value without complaint."""
        value = {"a": [1, 2.5, "x", None, True, {"b": []}]}
        v.json_value("p", value)
        assert json.loads(json.dumps(value)) == value

    def test_json_object_none_is_empty(self) -> None:
        """`json_object(None)` is an empty dict, and the result is a plain copy."""
        assert v.json_object("p", None) == {}
        source = MappingProxyType({"a": 1})
        result = v.json_object("p", source)
        assert result == {"a": 1} and type(result) is dict

    def test_json_object_size_cap(self) -> None:
        """`json_object` enforces `max_bytes` on the compact JSON encoding."""
        value = {"k": "x" * 10}  # {"k":"xxxxxxxxxx"} is 18 bytes
        assert v.json_object("p", value, max_bytes=18) == value
        with pytest.raises(ValidationError):
            v.json_object("p", value, max_bytes=17)

    def test_attributes_limits(self) -> None:
        """`attributes` enforces 300 names and 1000-byte values."""
        assert len(v.attributes("t", {str(n): n for n in range(300)})) == 300
        with pytest.raises(ValidationError):
            v.attributes("t", {str(n): n for n in range(301)})
        with pytest.raises(ValidationError) as info:
            v.attributes("t", {"a": "x" * 1001})
        assert info.value.field == "t.a"

    def test_operation_size(self) -> None:
        """`operation_size` allows exactly 32 KB and rejects one byte more."""
        overhead = len('{"k":""}')
        v.operation_size("payload", {"k": "x" * (32 * 1024 - overhead)})
        with pytest.raises(ValidationError) as info:
            v.operation_size("payload", {"k": "x" * (32 * 1024 - overhead + 1)})
        assert info.value.field == "payload"

    def test_choice(self) -> None:
        """`choice` returns an allowed value and rejects others."""
        assert v.choice("platform", "ios", ("ios", "android")) == "ios"
        with pytest.raises(ValidationError):
            v.choice("platform", "IOS", ("ios", "android"))

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("u1", {"id": "u1"}), (5, {"id": "5"}), ({"email": "a@x.test"}, {"email": "a@x.test"})],
    )
    def test_person_reference(self, value: object, expected: dict[str, str]) -> None:
        """`person_reference` turns shorthand and dicts into one-key references."""
        assert v.person_reference("p", value) == expected

    def test_encoded_len_counts_utf8(self) -> None:
        """`encoded_len` measures compact JSON in UTF-8 bytes, non-ASCII unescaped."""
        assert v.encoded_len({"a": "é"}) == len('{"a":"é"}'.encode())
        assert v.utf8_len("é") == 2


class TestEmailRecipient:
    def test_email_requires_to(self, producer: Producer, redis_client: redis.Redis) -> None:
        """/v1/send/email requires `to`: refused at enqueue, nothing stored."""
        with pytest.raises(ValidationError) as info:
            producer.enqueue_send_email(1, identifiers={"id": "u"})
        assert info.value.field == "to"
        assert redis_client.dbsize() == 0


def nested(depth: int) -> dict[str, Any]:
    """`{"a": {"a": ... {}}}`, `depth` dicts deep (built without recursion)."""
    inner: dict[str, Any] = {}
    outer = inner
    for _ in range(depth - 1):
        outer = {"a": outer}
    return outer


class TestEncodable:
    """Input no encoder can write is refused by name (it used to raise UnicodeEncodeError,
    ValueError, RecursionError or TypeError, from deep inside the producer)."""

    @pytest.mark.parametrize(
        ("call", "field"),
        [
            (lambda p: p.enqueue_track("u-\ud800", "Viewed"), "user_id"),
            (lambda p: p.enqueue_track("u-1", "View\udfffed"), "event"),
            (lambda p: p.enqueue_track("u-1", "Viewed", {"a": "x\ud800"}), "properties.a"),
            (
                lambda p: p.enqueue_track("u-1", "Viewed", {"a": ["ok", "\ud800"]}),
                "properties.a[1]",
            ),
            (lambda p: p.enqueue_identify("u-1", {"n\ud800": 1}), "traits"),
            (lambda p: p.enqueue_page("u-1", "https://x.test/\ud800"), "url"),
            (lambda p: p.enqueue_delete("\ud800"), "user_id"),
            (lambda p: p.enqueue_merge({"email": "\ud800@x.test"}, "b"), "primary.email"),
            (
                lambda p: p.enqueue_send_sms("welcome\ud800", identifiers={"id": "u"}),
                "transactional_message_id",
            ),
            (lambda p: p.enqueue_send_sms(1, identifiers={"id": "u"}, to="+1\ud800"), "to"),
            (lambda p: p.enqueue_broadcast(1, data={"x": "\ud800"}), "data.x"),
            (lambda p: p.enqueue_broadcast(1, ids=["u-1", "\ud800"]), "ids[1]"),
        ],
    )
    def test_lone_surrogate(
        self, producer: Producer, rejects: Rejects, call: Callable[[Producer], str], field: str
    ) -> None:
        """A lone surrogate (not UTF-8, not JSON) in an id, a name, a key or a value."""
        with rejects(field, "unicode"):
            call(producer)

    def test_int_over_4300_digits(self, producer: Producer, rejects: Rejects) -> None:
        """An int Python cannot turn into text (over 4300 digits) is refused by path."""
        with rejects("properties.n", "4300"):
            producer.enqueue_track("u-1", "Viewed", {"n": 10**4300})

    def test_int_of_4300_digits_accepted(
        self, producer: Producer, redis_client: redis.Redis
    ) -> None:
        """4300 digits is the last size a job can be written and read back with."""
        job_id = producer.enqueue_track("u-1", "Viewed", {"n": -(10**4300 - 1)})
        assert stored_payload(redis_client, job_id)["properties"]["n"] == -(10**4300 - 1)

    def test_huge_int_id(self, producer: Producer, rejects: Rejects) -> None:
        """A huge int id is over 150 bytes, whatever its size (no ValueError from str())."""
        with rejects("user_id", "150"):
            producer.enqueue_identify(10**5000)

    @pytest.mark.parametrize("value", [2**63, 10**5000], ids=["2**63", "10**5000"])
    def test_object_ids_are_64_bit(self, producer: Producer, rejects: Rejects, value: int) -> None:
        """Message and broadcast ids are 64-bit ints."""
        with rejects("transactional_message_id", "positive int"):
            producer.enqueue_send_sms(value, identifiers={"id": "u"})
        with rejects("broadcast_id", "positive int"):
            producer.enqueue_broadcast(value)

    def test_nesting_10_000_deep(self, producer: Producer, rejects: Rejects) -> None:
        """10,000 levels used to be a RecursionError; the path is named down to the limit."""
        with pytest.raises(ValidationError) as info:
            producer.enqueue_track("u-1", "Viewed", nested(10_000))
        assert info.value.field == "properties" + ".a" * 64
        assert "64 levels" in info.value.rule

    def test_nesting_at_limit_accepted(self, producer: Producer, redis_client: redis.Redis) -> None:
        """64 levels below the argument are accepted."""
        job_id = producer.enqueue_track("u-1", "Viewed", nested(64))
        assert stored_payload(redis_client, job_id)["properties"] == nested(64)

    def test_cycle(self, producer: Producer, rejects: Rejects) -> None:
        """A value that contains itself is refused as too deep, not a RecursionError."""
        loop: list[Any] = []
        loop.append(loop)
        with pytest.raises(ValidationError, match="levels"):
            producer.enqueue_track("u-1", "Viewed", {"loop": loop})

    def test_mixed_type_keys_in_identifiers(self, producer: Producer, rejects: Rejects) -> None:
        """Keys of several types could not be sorted for the message (TypeError)."""
        with rejects("identifiers", "unknown keys"):
            producer.enqueue_send_email(1, identifiers={1: "a", "x": "b"}, to="a@x.test")  # type: ignore[dict-item]

    def test_huge_int_platform(self, producer: Producer, rejects: Rejects) -> None:
        """The error message shows the value without calling repr() on a huge int."""
        with rejects("platform", "ios"):
            producer.enqueue_add_device("u-1", "tok", 10**5000)  # type: ignore[arg-type]


class TestControlCharacters:
    @pytest.mark.parametrize("value", ["u\n1", "u\x00", "\tu", "u\x7f", "u\x85", "u\r"])
    def test_in_user_id(self, producer: Producer, rejects: Rejects, value: str) -> None:
        """Ids may not hold control characters (C0, DEL, C1)."""
        with rejects("user_id", "control"):
            producer.enqueue_identify(value)

    @pytest.mark.parametrize(
        ("call", "field"),
        [
            (lambda p: p.enqueue_track_anonymous("a\n", "Viewed"), "anonymous_id"),
            (lambda p: p.enqueue_remove_device("u", "tok\x00"), "device_id"),
            (lambda p: p.enqueue_merge({"email": "a@x.test\n"}, "b"), "primary.email"),
            (lambda p: p.enqueue_send_sms(1, identifiers={"cio_id": "c\n"}), "identifiers.cio_id"),
            (
                lambda p: p.enqueue_send_email(1, identifiers={"id": "u"}, to="a@x.test\r\nBcc: e"),
                "to",
            ),
            (lambda p: p.enqueue_broadcast(1, emails=["a@x.test", "b@x.test\n"]), "emails[1]"),
            (
                lambda p: p.enqueue_broadcast(1, per_user_data=[{"id": "u\x00", "data": {}}]),
                "per_user_data[0].id",
            ),
        ],
    )
    def test_in_other_ids(
        self, producer: Producer, rejects: Rejects, call: Callable[[Producer], str], field: str
    ) -> None:
        """Every id-like field follows the same rule."""
        with rejects(field, "control"):
            call(producer)

    @pytest.mark.parametrize("value", ["user 42", "ü-ß", "a\u00a0b", "名前"])
    def test_printable_ids_accepted(
        self, producer: Producer, redis_client: redis.Redis, value: str
    ) -> None:
        """Spaces and non-ASCII letters are not control characters."""
        job_id = producer.enqueue_identify(value)
        assert stored_payload(redis_client, job_id)["user_id"] == value


class TestAwareDatetimeRange:
    @pytest.mark.parametrize(
        "value",
        [
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-12))),
            datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),
            datetime(2286, 11, 20, 17, 46, 40, tzinfo=UTC),
        ],
    )
    def test_out_of_range(self, producer: Producer, rejects: Rejects, value: datetime) -> None:
        """An aware datetime gets the range an int gets (Unix seconds 0..9999999999)."""
        with rejects("timestamp", "1970"):
            producer.enqueue_track("u-1", "Viewed", timestamp=value)

    @pytest.mark.parametrize(
        ("value", "seconds"),
        [
            (datetime(1970, 1, 1, tzinfo=UTC), 0),
            (datetime(2286, 11, 20, 17, 46, 39, 999_999, tzinfo=UTC), 9_999_999_999),
        ],
    )
    def test_edges_accepted(
        self, producer: Producer, redis_client: redis.Redis, value: datetime, seconds: int
    ) -> None:
        job_id = producer.enqueue_identify("u-1", timestamp=value)
        assert stored_payload(redis_client, job_id)["timestamp"] == seconds

    def test_broken_tzinfo(self, producer: Producer, rejects: Rejects) -> None:
        """A tzinfo whose offset cannot be used is a ValidationError, not its exception."""

        class Broken(tzinfo):
            def utcoffset(self, dt: object) -> timedelta:
                return timedelta(days=2)  # over 24 hours: datetime refuses it

        with rejects("last_used", "converted"):
            producer.enqueue_add_device(
                "u-1", "tok", "ios", last_used=datetime(2024, 1, 1, tzinfo=Broken())
            )


class TestBroadcastSizes:
    """Customer.io's API-triggered broadcast limits: data 50,000 bytes, whole trigger 25 MB,
    10,000 recipients, and each recipient a person id or email (150 bytes)."""

    def test_data_over_50_000_bytes(self, producer: Producer, rejects: Rejects) -> None:
        with rejects("data", "50000"):
            producer.enqueue_broadcast(1, data={"blob": "x" * 50_000})

    def test_ten_megabyte_data(self, producer: Producer, rejects: Rejects) -> None:
        """The reported case: 10 MB of data used to be stored."""
        with rejects("data", "50000"):
            producer.enqueue_broadcast(1, data={"blob": "x" * 10_000_000})

    def test_data_at_50_000_bytes(self, producer: Producer, redis_client: redis.Redis) -> None:
        data = {"blob": "x" * (50_000 - len('{"blob":""}'))}
        job_id = producer.enqueue_broadcast(1, data=data)
        assert stored_payload(redis_client, job_id)["body"]["data"] == data

    def test_ten_megabyte_ids(self, producer: Producer, rejects: Rejects) -> None:
        """The reported case: 10,000 ids of 1000 bytes (10 MB) used to be stored."""
        with rejects("ids[0]", "150"):
            producer.enqueue_broadcast(1, ids=["i" * 1000] * 10_000)

    @pytest.mark.parametrize(("key", "entry"), [("ids", ""), ("ids", 1.5), ("emails", "e" * 151)])
    def test_audience_entries_are_person_ids(
        self, producer: Producer, rejects: Rejects, key: str, entry: object
    ) -> None:
        with rejects(f"{key}[1]"):
            producer.enqueue_broadcast(1, **{key: ["ok", entry]})

    def test_over_10_000_emails(self, producer: Producer, rejects: Rejects) -> None:
        with rejects("emails", "10000"):
            producer.enqueue_broadcast(1, emails=[f"{n}@x.test" for n in range(10_001)])

    def test_whole_trigger_over_25_mb(self, producer: Producer, rejects: Rejects) -> None:
        """Per-user data may be large, but the whole trigger stays under 25,000,000 bytes."""
        entries = [{"id": f"u{n}", "data": {"s": "x" * 2500}} for n in range(10_000)]
        with rejects("payload", "25000000"):
            producer.enqueue_broadcast(1, per_user_data=entries)

    def test_large_valid_audience_accepted(
        self, producer: Producer, redis_client: redis.Redis
    ) -> None:
        """10,000 ids of 150 bytes (1.5 MB) are within every limit."""
        ids = [f"{n:0150d}" for n in range(10_000)]
        job_id = producer.enqueue_broadcast(1, ids=ids)
        assert stored_payload(redis_client, job_id)["body"]["ids"] == ids


class TestDataFileUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "file:///etc/passwd",
            "ftp://x.test/data.json",
            "/data.json",
            "x.test/data.json",
            "https://",
            "https:///path",
            "https://x.test/da ta",
            "https://x.test/\ndata",
            "https://x.test:99999/data",
            "http://[::1/data",
            "javascript:alert(1)",
            "",
        ],
    )
    def test_not_an_http_url(self, producer: Producer, rejects: Rejects, url: str) -> None:
        """Customer.io fetches the file: only an absolute http(s) URL with a host will do."""
        with rejects("data_file_url"):
            producer.enqueue_broadcast(1, data_file_url=url)

    def test_not_a_string(self, producer: Producer, rejects: Rejects) -> None:
        with rejects("data_file_url", "string"):
            producer.enqueue_broadcast(1, data_file_url=["https://x.test/"])  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "url", ["https://x.test/data.jsonl.gz", "HTTP://x.test:8080/a?b=c#d", "https://[::1]/d"]
    )
    def test_http_urls_accepted(
        self, producer: Producer, redis_client: redis.Redis, url: str
    ) -> None:
        job_id = producer.enqueue_broadcast(1, data_file_url=url)
        assert stored_payload(redis_client, job_id)["body"]["data_file_url"] == url


def test_email_headers_nested_past_the_stack_are_refused_not_crashed() -> None:
    """`headers="[" * 100000` raised RecursionError; it is a ValidationError naming the field."""
    from cio_worker.errors import ValidationError as Refused
    from cio_worker.produce._payloads import email_headers

    with pytest.raises(Refused, match="^headers: "):
        email_headers("[" * 100_000)


class TestFlatPropertiesCheckedByTheEncoder:
    """Flat event properties (str, int, bool and None values) are not walked value by value:
    orjson refuses while encoding what the walk would refuse, and only then does the walk run,
    to name the problem. The answers must be the walk's, exactly."""

    @pytest.mark.parametrize(
        "properties",
        [
            {"bad": "lone \ud800 surrogate"},
            {"key \udfff": "value"},
            {1: "a key that is not a string"},
            {"big": 10**5000},  # past MAX_INT_DIGITS
            {"ok": "x", 2: "y"},
        ],
        ids=["surrogate-value", "surrogate-key", "int-key", "huge-int", "mixed-keys"],
    )
    def test_refused_exactly_as_the_walk_refuses(self, properties: dict[Any, Any]) -> None:
        from cio_worker.produce import _jobs as jobs

        assert v.flat_json_object(properties) is not None  # the fast path takes it
        with pytest.raises(ValidationError) as walked:
            v.json_object("properties", properties)
        with pytest.raises(ValidationError) as fast:
            jobs.track("u-1", "Signed Up", properties)
        assert (fast.value.field, fast.value.rule) == (walked.value.field, walked.value.rule)

    @pytest.mark.parametrize(
        "properties",
        [
            {},
            None,
            {"plan": "pro", "n": 3, "ok": True, "none": None, "é": "ü"},
            {"beyond 64 bits": 2**64 + 1, "negative": -(2**70)},  # orjson refuses, json writes
        ],
    )
    def test_accepted_and_encoded_as_stored(self, properties: dict[str, Any] | None) -> None:
        """The JSON the builder hands the bulk producer is the payload's, exactly as json
        writes it (a long int too)."""
        from cio_worker.produce import _jobs as jobs

        draft = jobs.track("u-1", "Signed Up", properties)
        assert draft.payload_json == json.dumps(
            draft.payload, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
        assert draft.payload["properties"] == (properties or {})

    @pytest.mark.parametrize(
        "properties",
        [
            {"price": 1.5},  # orjson writes NaN as null: floats are walked
            {"nested": {"a": 1}},
            {"list": [1]},
            MappingProxyType({"a": 1}),
            {"s": type("S", (str,), {})("x")},  # a str subclass: not an exact type
        ],
    )
    def test_anything_else_is_walked(self, properties: Any) -> None:
        assert v.flat_json_object(properties) is None

    def test_nan_is_still_refused(self) -> None:
        from cio_worker.produce import _jobs as jobs

        with pytest.raises(ValidationError, match="finite"):
            jobs.track("u-1", "Signed Up", {"price": math.nan})
