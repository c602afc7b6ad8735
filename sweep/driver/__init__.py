"""The sweep as a whole: the Ray Tune driver (`orchestrate`), the checks it makes once before any
trial (`preflight`), the `paired` scheduler (`paired_stopping`), the live view (`live_view`),
failures told in one line (`failures`) and what a sweep leaves behind (`outcome`)."""
