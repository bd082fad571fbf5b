"""Fuzz harnesses for the four uplink parsers (CLTU, TC frame, SDLS, PUS-C TC), one module each.

Each module has a `Harness` whose `one_input(data)` turns the fuzzer's bytes
into a structured input (valid objects built with our declarations, then
mutated, the FECF/CRC or BCH fixed up so the mutation reaches the layer
behind the check), feeds the parser, and raises only when the property is
broken: a foreign exception type escapes, or a value is not what the
declaration says it must be. `python -m tests.fuzz.run` drives them with
atheris (coverage-guided) or with seeded random bytes (coverage-free);
tests/test_fuzz_uplink.py is the short run in the default pytest.
"""
