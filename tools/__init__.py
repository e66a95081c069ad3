"""Tools that drive the whole system: the CLI, the demo, chaos runs, benchmarks, embedded servers, the
connector conformance kit. They sit on top: nothing in the kernel, backend, dashboard or connectors imports
them."""
