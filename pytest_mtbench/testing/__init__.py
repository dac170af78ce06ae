"""Test doubles shipped with the plugin: tiny local models and a loopback OpenAI-compatible server."""
