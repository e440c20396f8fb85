"""The GraphQL door at ``/graphql``: Strawberry over the services every door calls (docs/graphql.md)."""
