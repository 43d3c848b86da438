# Sourced by scripts/setup.sh and bench/run.sh: one way to keep a pinned virtual environment.
#
#   ensure_venv DIR REQUIREMENTS [NO_DEPS_REQUIREMENTS]
#
# Creates DIR with $PYTHON when missing, installs REQUIREMENTS, then NO_DEPS_REQUIREMENTS with
# --no-deps. A stamp in DIR holds the SHA-256 of the requirement files: when it matches, nothing
# runs; when a file changes, pip runs again. Uses the caller's `say` for progress.
ensure_venv() {
    local venv="$1" requirements="$2" nodeps="${3:-}"
    local name stamp want
    name="$(basename "$venv")"
    stamp="$venv/.requirements.sha256"
    want="$(cat "$requirements" ${nodeps:+"$nodeps"} | sha256sum | cut -d' ' -f1)"
    if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        say "Python environment up to date ($name)"
        return
    fi
    if [[ ! -x "$venv/bin/python" ]]; then
        say "creating $name with $("$PYTHON" --version)"
        "$PYTHON" -m venv "$venv"
    fi
    say "installing Python packages into $name ($requirements${nodeps:+, $nodeps})"
    "$venv/bin/python" -m pip install -q -r "$requirements"
    if [[ -n "$nodeps" ]]; then
        "$venv/bin/python" -m pip install -q --no-deps -r "$nodeps"
    fi
    echo "$want" >"$stamp"
}
