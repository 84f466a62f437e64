"""The HubSpot adapter against the fake HubSpot over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from gateway.domain import Customer, ProfileChanges
from gateway.errors import BadUserInput, IntegrationUnavailable, NotFound
from gateway.settings import Settings
from gateway.sources.hubspot import HubSpotCrm
from tests.fakes.hubspot import FakeHubSpot, validation_error

FAST = {
    "retry_max_attempts": 3,
    "retry_base_delay": 0.01,
    "retry_max_delay": 0.05,
    "upstream_timeout": 2.0,
}


def hubspot_settings(fake: FakeHubSpot, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "crm_source": "hubspot",
        "hubspot_api_base": fake.url,
        "hubspot_access_token": fake.token,
        "hubspot_object": fake.object_type,
        **FAST,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="module")
def hubspot_server() -> Iterator[FakeHubSpot]:
    with FakeHubSpot().running() as fake:
        yield fake


@pytest.fixture
def hubspot(hubspot_server: FakeHubSpot) -> FakeHubSpot:
    """The module's fake HubSpot, emptied for this test."""
    hubspot_server.reset()
    return hubspot_server


@pytest.fixture
async def make_crm() -> AsyncIterator[Callable[..., HubSpotCrm]]:
    made: list[HubSpotCrm] = []

    def make(fake: FakeHubSpot, **overrides: Any) -> HubSpotCrm:
        crm = HubSpotCrm(hubspot_settings(fake, **overrides))
        made.append(crm)
        return crm

    yield make
    for crm in made:
        await crm.aclose()


@pytest.fixture
def crm(hubspot: FakeHubSpot, make_crm: Callable[..., HubSpotCrm]) -> HubSpotCrm:
    return make_crm(hubspot)


def test_it_refuses_to_start_without_a_token(hubspot: FakeHubSpot) -> None:
    with pytest.raises(ValueError, match="HUBSPOT_ACCESS_TOKEN"):
        HubSpotCrm(hubspot_settings(hubspot, hubspot_access_token=None))


async def test_a_contact_is_read_with_its_properties_named(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    ada = hubspot.add(
        firstname="Ada",
        lastname="Lovelace",
        email="ada@example.com",
        company="Analytical Engines",
        phone="+44 20 7946 0001",
        stripe_customer_id="cus_Ada1",
        zendesk_user_id="360000001",
        website="https://ada.example.com",
    )
    only_first = hubspot.add(firstname="Grace", email="grace@example.com")
    nameless = hubspot.add(email="anon@example.com", firstname="  ", lastname="")

    found = await crm.customers([ada, only_first, nameless])

    assert found == [
        Customer(
            id=ada,
            name="Ada Lovelace",
            email="ada@example.com",
            company="Analytical Engines",
            phone="+44 20 7946 0001",
            billing_id="cus_Ada1",
            helpdesk_id="360000001",
        ),
        Customer(id=only_first, name="Grace", email="grace@example.com"),
        Customer(id=nameless, email="anon@example.com"),
    ]
    [call] = hubspot.calls_to("batch_read")
    assert call.path == "/crm/v3/objects/contacts/batch/read"
    assert call.json == {
        "inputs": [{"id": ada}, {"id": only_first}, {"id": nameless}],
        "properties": [
            "firstname",
            "lastname",
            "email",
            "company",
            "phone",
            "stripe_customer_id",
            "zendesk_user_id",
        ],
        "propertiesWithHistory": [],
    }
    assert call.headers["authorization"] == f"Bearer {hubspot.token}"


async def test_ids_are_read_a_hundred_a_call_each_once_in_key_order(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    ids = [hubspot.add(firstname=f"C{n}") for n in range(230)]
    asked = [*ids, ids[0], "not-a-hubspot-id", "99999999", ids[5]]

    found = await crm.customers(asked)

    assert [c.id if isinstance(c, Customer) else c for c in found] == [
        *ids,
        ids[0],
        None,
        None,
        ids[5],
    ]
    sizes = sorted(len(call.json["inputs"]) for call in hubspot.calls_to("batch_read"))
    assert sizes == [31, 100, 100]  # 230 distinct ids + the unknown numeric one
    sent = [i["id"] for call in hubspot.calls_to("batch_read") for i in call.json["inputs"]]
    assert len(sent) == len(set(sent))
    assert "not-a-hubspot-id" not in sent


async def test_only_unusable_ids_make_no_call(hubspot: FakeHubSpot, crm: HubSpotCrm) -> None:
    assert await crm.customers(["nope", "", "12a"]) == [None, None, None]
    assert hubspot.count() == 0


async def test_a_207_returns_the_found_customers(hubspot: FakeHubSpot, crm: HubSpotCrm) -> None:
    a = hubspot.add(firstname="A")
    b = hubspot.add(firstname="B")

    found = await crm.customers([a, "424242", b])

    assert [c.name if isinstance(c, Customer) else c for c in found] == ["A", None, "B"]
    [call] = hubspot.calls
    assert call.status == 207


async def test_a_207_error_other_than_not_found_fails_only_its_ids(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    a = hubspot.add(firstname="A")
    b = hubspot.add(firstname="B")
    hubspot.fail(
        "batch_read",
        207,
        body={
            "status": "COMPLETE",
            "results": [{"id": a, "properties": {"firstname": "A"}}],
            "numErrors": 1,
            "errors": [
                {
                    "status": "error",
                    "category": "INTERNAL_ERROR",
                    "message": "secret detail from hubspot",
                    "context": {"ids": [b]},
                }
            ],
        },
    )

    found_a, found_b = await crm.customers([a, b])

    assert isinstance(found_a, Customer)
    assert isinstance(found_b, IntegrationUnavailable)
    assert "secret" not in found_b.message


async def test_a_company_is_the_customer_when_configured(
    make_crm: Callable[..., HubSpotCrm],
) -> None:
    with FakeHubSpot(object_type="companies").running() as fake:
        crm = make_crm(fake)
        acme = fake.add(name="Acme Ltd", domain="acme.example", phone="+1 555 0100")

        [found] = await crm.customers([acme])
        assert found == Customer(id=acme, name="Acme Ltd", company="Acme Ltd", phone="+1 555 0100")
        assert fake.calls[0].path == "/crm/v3/objects/companies/batch/read"

        renamed = await crm.update_profile(acme, ProfileChanges(name="Acme Group"))
        assert renamed.name == renamed.company == "Acme Group"
        assert fake.get(acme)["name"] == "Acme Group"
        with pytest.raises(BadUserInput) as refused:
            await crm.update_profile(acme, ProfileChanges(company="Other"))
        assert refused.value.extensions["field"] == "company"


# -- errors ------------------------------------------------------------------------------


async def test_a_wrong_token_is_unavailable_without_the_provider_message(
    hubspot: FakeHubSpot, make_crm: Callable[..., HubSpotCrm]
) -> None:
    crm = make_crm(hubspot, hubspot_access_token="pat-na1-wrong")
    [found] = await crm.customers([hubspot.add(firstname="A")])

    assert isinstance(found, IntegrationUnavailable)
    assert found.message == "hubspot rejected the gateway's credentials"
    assert found.extensions == {
        "code": "INTEGRATION_UNAVAILABLE",
        "source": "hubspot",
        "retryable": False,
    }
    assert hubspot.count() == 1  # our credentials will not get better by asking again


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_not_retryable(
    hubspot: FakeHubSpot, crm: HubSpotCrm, status: int
) -> None:
    hubspot.fail("batch_read", status)
    [found] = await crm.customers([hubspot.add(firstname="A")])
    assert isinstance(found, IntegrationUnavailable)
    assert found.retryable is False
    assert "Authentication" not in found.message


async def test_a_404_answer_means_not_found(hubspot: FakeHubSpot, crm: HubSpotCrm) -> None:
    hubspot.fail("batch_read", 404)
    assert await crm.customers([hubspot.add(firstname="A")]) == [None]


async def test_a_404_that_is_not_hubspots_is_unavailable(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    # e.g. HUBSPOT_API_BASE pointing at the wrong host: not "every customer vanished"
    hubspot.fail("batch_read", 404, body={"detail": "no such route"})
    [found] = await crm.customers([hubspot.add(firstname="A")])
    assert isinstance(found, IntegrationUnavailable)


async def test_a_429_is_retried_after_its_retry_after(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    hubspot.fail("batch_read", 429, headers={"Retry-After": "0.2"})
    started = time.monotonic()
    [found] = await crm.customers([hubspot.add(firstname="A")])
    assert isinstance(found, Customer)
    assert time.monotonic() - started >= 0.2
    assert [call.status for call in hubspot.calls] == [429, 200]


async def test_a_429_beyond_the_deadline_is_unavailable_with_retry_after(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    hubspot.fail("batch_read", 429, headers={"Retry-After": "30"})
    [found] = await crm.customers([hubspot.add(firstname="A")])
    assert isinstance(found, IntegrationUnavailable)
    assert found.retryable is True
    assert found.retry_after == 30
    assert hubspot.count() == 1


async def test_a_500_is_retried_then_unavailable(hubspot: FakeHubSpot, crm: HubSpotCrm) -> None:
    hubspot.fail("batch_read", 500, times=None)
    [found] = await crm.customers([hubspot.add(firstname="A")])
    assert isinstance(found, IntegrationUnavailable)
    assert found.retryable is True
    assert hubspot.count() == 3  # RETRY_MAX_ATTEMPTS, a read being safe to repeat


@pytest.mark.parametrize(
    "body",
    [
        None,  # truncated JSON
        {"results": "not a list"},
        {"results": [{"properties": {"firstname": "no id"}}]},
        ["a", "list"],
    ],
)
async def test_an_unreadable_answer_is_unavailable(
    hubspot: FakeHubSpot, crm: HubSpotCrm, body: Any
) -> None:
    if body is None:
        hubspot.fail("batch_read", malformed=True)
    else:
        hubspot.fail("batch_read", 200, body=body)
    [found] = await crm.customers([hubspot.add(firstname="A")])
    assert isinstance(found, IntegrationUnavailable)
    assert found.message == "hubspot answered something the gateway could not read"


async def test_the_breaker_state_is_the_clients(
    hubspot: FakeHubSpot, make_crm: Callable[..., HubSpotCrm]
) -> None:
    crm = make_crm(hubspot, breaker_failures=2, retry_max_attempts=2)
    assert crm.breaker_state == "closed"
    hubspot.fail("batch_read", 503, times=None)
    await crm.customers([hubspot.add(firstname="A")])
    assert crm.breaker_state == "open"


async def test_calls_keep_within_the_configured_rate_limit(
    hubspot: FakeHubSpot, make_crm: Callable[..., HubSpotCrm]
) -> None:
    crm = make_crm(hubspot, rate_limit_hubspot="2/0.4s")
    # Arrivals are measured at the provider, so the first connection's set-up (which can
    # outlast the limiter's latency margin on a busy machine) is made before, outside the
    # window: what is measured is the limiter's spacing, not a handshake.
    await crm.customers([hubspot.add(firstname="warm-up")])
    await asyncio.sleep(0.5)
    warmed = len(hubspot.calls)
    ids = [hubspot.add(firstname=f"C{n}") for n in range(300)]
    await crm.customers(ids)
    arrivals = sorted(call.at for call in hubspot.calls[warmed:])
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] < 0.2  # the two calls the window allows go at once
    # The third waits for the window (0.4 s + the limiter's 0.05 s latency margin). The fake
    # records arrivals in a thread of this process, so its clock reading can lag by a
    # scheduling hiccup; unlimited, the third call would arrive with the first two.
    assert arrivals[2] - arrivals[0] >= 0.4 - 0.1


# -- links -------------------------------------------------------------------------------


async def test_customers_are_found_by_link_with_one_search_per_hundred(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    mixed_case = hubspot.add(firstname="A", stripe_customer_id="cus_MixedCase9")
    others = {
        f"cus_{n:04d}": hubspot.add(firstname=f"C{n}", stripe_customer_id=f"cus_{n:04d}")
        for n in range(120)
    }
    asked = ["cus_MixedCase9", *others, "cus_unknown"]

    found = await crm.customer_ids_by_link("billing", asked)

    assert found == [mixed_case, *others.values(), None]
    filters = [call.json["filterGroups"][0]["filters"][0] for call in hubspot.calls_to("search")]
    assert sorted(len(f["values"]) for f in filters) == [22, 100]
    assert {(f["propertyName"], f["operator"]) for f in filters} == {("stripe_customer_id", "IN")}
    # HubSpot's IN wants string values in lower case
    assert all(v == v.lower() for f in filters for v in f["values"])


async def test_a_duplicated_link_resolves_to_the_oldest_record(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    first = hubspot.add(firstname="A", zendesk_user_id="360000042")
    hubspot.add(firstname="B", zendesk_user_id="360000042")
    assert await crm.customer_ids_by_link("helpdesk", ["360000042"]) == [first]
    [call] = hubspot.calls_to("search")
    assert call.json["filterGroups"][0]["filters"][0]["propertyName"] == "zendesk_user_id"


async def test_a_failed_search_fails_its_ids(hubspot: FakeHubSpot, crm: HubSpotCrm) -> None:
    hubspot.fail("search", 401)
    [found] = await crm.customer_ids_by_link("helpdesk", ["1"])
    assert isinstance(found, IntegrationUnavailable)
    assert found.retryable is False


# -- updateProfile -----------------------------------------------------------------------


async def test_update_writes_hubspot_properties_and_answers_the_stored_record(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    ada = hubspot.add(
        firstname="Ada",
        lastname="Lovelace",
        email="ada@example.com",
        phone="+44 1",
        zendesk_user_id="360000001",
    )

    updated = await crm.update_profile(
        ada, ProfileChanges(name="Augusta  Ada King", company="Engines Ltd", phone="")
    )

    assert updated == Customer(
        id=ada,
        name="Augusta Ada King",
        email="ada@example.com",
        company="Engines Ltd",
        helpdesk_id="360000001",
    )
    [patch] = hubspot.calls_to("update")
    assert patch.method == "PATCH"
    assert patch.path == f"/crm/v3/objects/contacts/{ada}"
    assert patch.json == {
        "properties": {
            "firstname": "Augusta",
            "lastname": "Ada King",
            "company": "Engines Ltd",
            "phone": "",  # HubSpot clears a property given an empty string
        }
    }
    assert hubspot.get(ada)["phone"] is None
    [read] = await crm.customers([ada])
    assert read == updated


async def test_update_of_an_unknown_customer_is_not_found_and_writes_nothing(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    with pytest.raises(NotFound):
        await crm.update_profile("123456", ProfileChanges(name="X"))
    with pytest.raises(NotFound):
        await crm.update_profile("not-an-id", ProfileChanges(name="X"))
    assert hubspot.count("update") == 0


async def test_a_record_deleted_meanwhile_is_not_found(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    hubspot.fail("update", 404)
    with pytest.raises(NotFound):
        await crm.update_profile(hubspot.add(firstname="A"), ProfileChanges(name="B"))


async def test_a_value_hubspot_refuses_is_bad_user_input_on_our_field(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    hubspot.rejects["phone"] = lambda value: not value.startswith("+")
    ada = hubspot.add(firstname="Ada")
    with pytest.raises(BadUserInput) as refused:
        await crm.update_profile(ada, ProfileChanges(phone="020 7946 0001"))
    assert refused.value.extensions == {"code": "BAD_USER_INPUT", "field": "phone"}
    assert "020" not in refused.value.message
    hubspot.fail("update", 400, body=validation_error("lastname"))
    with pytest.raises(BadUserInput) as name_refused:
        await crm.update_profile(ada, ProfileChanges(name="Ada L"))
    assert name_refused.value.extensions["field"] == "name"


async def test_a_refusal_named_only_in_hubspots_message_is_understood_too(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    embedded = '[{"isValid":false,"message":"bad","error":"INVALID_PHONE","name":"phone"}]'
    hubspot.fail(
        "update",
        400,
        body={
            "status": "error",
            "message": f"Property values were not valid: {embedded}",
            "category": "VALIDATION_ERROR",
        },
    )
    with pytest.raises(BadUserInput) as refused:
        await crm.update_profile(hubspot.add(firstname="A"), ProfileChanges(phone="+1 5"))
    assert refused.value.extensions["field"] == "phone"


async def test_a_400_we_do_not_understand_is_unavailable(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    hubspot.fail("update", 400, body=validation_error("hs_secret_internal"))
    with pytest.raises(IntegrationUnavailable) as failed:
        await crm.update_profile(hubspot.add(firstname="A"), ProfileChanges(name="B"))
    assert failed.value.retryable is False
    assert "hs_secret_internal" not in failed.value.message


async def test_a_failing_read_before_the_write_writes_nothing(
    hubspot: FakeHubSpot, crm: HubSpotCrm
) -> None:
    ada = hubspot.add(firstname="Ada")
    hubspot.fail("batch_read", 500, times=None)
    with pytest.raises(IntegrationUnavailable):
        await crm.update_profile(ada, ProfileChanges(name="Augusta"))
    assert hubspot.count("update") == 0
    assert hubspot.get(ada)["firstname"] == "Ada"
