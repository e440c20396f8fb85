"""Small shared pieces every domain uses: errors, the response envelope, ids, clocks, logging."""
