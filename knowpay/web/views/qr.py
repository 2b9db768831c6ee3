"""QR codes drawn on the server as inline SVG (the `qrcode` package computes the modules): no image
service, no script, nothing a strict Content-Security-Policy would block."""

from __future__ import annotations

import qrcode
from markupsafe import Markup
from qrcode.constants import ERROR_CORRECT_M

QUIET_ZONE = 4  # modules of white around the code, as the QR standard asks
# Markup.format escapes every value put into it.
SVG = Markup('<svg class="qr" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" role="img" '
             'aria-label="{label}" shape-rendering="crispEdges"><rect width="{size}" height="{size}" fill="#fff"/>'
             '<path fill="#000" d="{path}"/></svg>')


def qr_svg(data: str, *, label: str) -> Markup:
    """An accessible SVG of `data`: one path of dark modules on a white square, labelled for screen readers."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=QUIET_ZONE)
    code.add_data(data)
    code.make(fit=True)
    matrix = code.get_matrix()
    size = len(matrix)
    runs = []
    for y, row in enumerate(matrix):
        x = 0
        while x < size:
            if row[x]:
                start = x
                while x < size and row[x]:
                    x += 1
                runs.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
            else:
                x += 1
    return SVG.format(size=size, label=label, path="".join(runs))
