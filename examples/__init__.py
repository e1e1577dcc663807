"""Examples that embed the engine and the reference flow (not part of the wheel)."""
