"""report.html embeds each figure once; a figure named again links to its first place."""
import base64

from qtrain.experiments.render import to_html

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def test_each_figure_is_embedded_once(tmp_path):
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "b.png").write_bytes(PNG)
    md = "# r\n\n![error](a.png)\n\ntext\n\n![error again](a.png)\n\n![other](b.png)\n"
    page = to_html(md, "t", base=tmp_path)
    assert page.count("<img ") == 2 and page.count("data:image/png;base64,") == 2
    assert "href='#fig1'" in page and "id='fig1'" in page and "id='fig2'" in page
