//! Static checks of what the project ships; the checks themselves are in `tests/`.
