"""ARML Explorer: the entry point. A router over the pages in pages/; it initialises the
state shared across pages (the sidebar selection, mirrored in the URL, and trained
metrics), which every page shows in the same sidebar.

UI only: every number comes from ``arml_core`` and every figure from ``arml_core.plots``.
"""
from __future__ import annotations

import streamlit as st

from pages._shared import init_state

st.set_page_config(page_title="ARML Explorer", page_icon="🛡️", layout="wide")

PAGES = [
    st.Page("pages/train.py", title="Train & compare", icon="🏋️", default=True, url_path="train"),
    st.Page("pages/boundaries.py", title="Decision boundaries", icon="🗺️", url_path="boundaries"),
    st.Page("pages/curves.py", title="Robustness curves", icon="📉", url_path="curves"),
    st.Page("pages/examples.py", title="Adversarial examples", icon="🔍", url_path="examples"),
    st.Page("pages/pairwise.py", title="Pairwise attacks", icon="👥", url_path="pairwise"),
]

init_state()
st.navigation(PAGES).run()  # each page draws the shared sidebar (pages._shared.sidebar)
