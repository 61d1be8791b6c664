"""What anyone may read without a token: the credit packages on sale."""

from __future__ import annotations

from litestar import get
from litestar.datastructures import State

from gateway.openapi import NO_TOKEN, ApiController
from gateway.schemas import Price, PublicPackage, PublicPackageList
from projections import queries


class PublicController(ApiController):
    path = "/api/credits/packages"
    tags = ["Public"]  # noqa: RUF012 - Litestar reads a list here.

    @get(
        operation_id="ListPackages",
        summary="The credit packages on sale",
        description="Active packages only, cheapest first. Prices are integers of minor units (centavos).",
        exclude_from_auth=True,
        security=NO_TOKEN,
    )
    async def packages(self, state: State) -> PublicPackageList:
        listed = await queries.packages(state.pool, active_only=True)
        return PublicPackageList(
            packages=[
                PublicPackage(
                    id=p.id,
                    name=p.name,
                    credits=p.credits,
                    price=Price(amount_minor=p.price.amount_minor, currency=p.price.currency),
                    active=p.active,
                )
                for p in listed
            ]
        )
