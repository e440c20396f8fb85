"""``[graphql]``: the GraphQL door at ``/graphql``: what it shows and how much one document may ask."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class GraphQLSettings(BaseModel):
    """The GraphQL door (``[graphql]`` in trellis.toml, ``TRELLIS_GRAPHQL__*``)."""

    model_config = ConfigDict(extra="forbid")

    # Serve /graphql at all (HTTP and the graphql-transport-ws subscriptions).
    enabled: bool = True
    # Schema introspection (__schema, __type) and the GraphiQL page on GET /graphql. Both on by
    # default, as in development; turn them off in production if the schema is not to be browsed.
    introspection: bool = True
    graphiql: bool = True
    # Deepest selection a document may nest (fragments counted where they are spread).
    max_depth: Annotated[int, Field(ge=2, le=100)] = 12
    # Most a document may cost: every field 1, a list field's selection multiplied by its page size
    # (`first`, `limit`, or the default page), nested lists multiplied together.
    max_cost: Annotated[int, Field(ge=10, le=10_000_000)] = 50_000
    # Largest document, in lexical tokens (a cheap guard that runs before validation), and most aliases.
    max_tokens: Annotated[int, Field(ge=100, le=1_000_000)] = 5_000
    max_aliases: Annotated[int, Field(ge=1, le=10_000)] = 50
    # What a list counts for when the document gives no page size.
    default_list_cost: Annotated[int, Field(ge=1, le=10_000)] = 10
    # graphql-transport-ws: how long a socket may wait before its connection_init (then 4408).
    connection_init_wait_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
