"""How processes start and share work: library chatter and the garbage collector at start-up
(`startup`), Ray for a sweep (`cluster`), the warm workers' preload (`worker_preload`), and the
rows and reference log-probs prepared once per sweep for every trial (`shared_cache`).

Imports only `sweep.compat` and `sweep.errors`."""
