//! Host-side client for the agent.
