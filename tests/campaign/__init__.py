"""The randomized fault campaign: real processes, a restarting broker, an independent consumer."""
