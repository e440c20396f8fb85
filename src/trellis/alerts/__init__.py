"""Alerts: rules over the metric history, evaluated by one replica at a time, with states, history,
silences and signed webhooks (``docs/monitoring.md``)."""
