"""What a sweep is: the spec's schema (`schema`), read from YAML (`strict_yaml`, `overrides`),
loaded and checked (`load.parse_spec`, `load.load_spec`; `checks`, the trainers' fields in
`catalogue`, loss families in `families`), its axes and points (`axes`, `points`), and the
schema as editors read it (`export`) or `sweep init` writes it (`scaffold`).

Imports nothing above `sweep.data`: every layer takes the spec's types from here. Kept empty so
that importing one module here loads no other."""
