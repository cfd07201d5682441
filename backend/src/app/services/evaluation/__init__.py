"""Decision evaluation: what followed each decision at fixed horizons (outcomes), the figures derived from them
(hit rate, returns, calibration) and the statistics that tell a real edge from luck (A/B experiments)."""
