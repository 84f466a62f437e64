import asyncio, time
import pytest
from tests.upstream.conftest import make_settings
from tests.upstream.test_client import busiest_window
@pytest.mark.parametrize("i", range(5))
@pytest.mark.parametrize("warm", [True, False])
async def test_dbg(i, warm, provider, make_client, redis_client, cache_prefix):
    settings = make_settings(rate_limit_xero="10/1s", upstream_timeout=5.0, cache_prefix=cache_prefix)
    replicas = [make_client("xero", provider.url, settings, redis=redis_client) for _ in "ab"]
    n = 15
    if warm:
        await asyncio.gather(*(r.request("GET", "/I", operation="x") for r in replicas))
        n = 14
    await asyncio.gather(*(r.request("GET", "/I", operation="x") for r in replicas for _ in range(n)))
    times = [c.at for c in provider.calls]
    print(warm, busiest_window(times, 1.0), round(max(times)-min(times),3))
