"""Message flows: multi-step conversations (definitions, rendering, the runtime)."""
