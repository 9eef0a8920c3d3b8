#!/usr/bin/env bash
# Headless Chromium and Korean and emoji fonts for tests/test_space_browser.py, from Debian packages: Playwright drives
# /usr/bin/chromium, so `playwright install` (a download from outside PyPI and Debian) is never needed.
# Idempotent. Without root (or passwordless sudo) or apt-get it only says so: the browser test then skips.
set -euo pipefail

# Without the fonts, Korean and emoji render as empty boxes in screenshots.
packages=(chromium fonts-noto-cjk fonts-noto-color-emoji)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install_browser: ${packages[*]} already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_browser: no apt-get; install ${missing[*]} yourself, or tests/test_space_browser.py skips" >&2
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "install_browser: not root; run 'sudo $0' to install ${missing[*]}, or tests/test_space_browser.py skips" >&2
    exit 0
fi
echo "install_browser: installing ${missing[*]}"
if ! { "${sudo[@]}" apt-get update -qq &&
       "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
then
    echo "install_browser: apt-get could not install ${missing[*]}; tests/test_space_browser.py skips" >&2
fi
