"""ARML Explorer: the entry point. A router over the pages in app_pages/; it initialises the
state shared across pages (the sidebar selection, mirrored in the URL, and trained
metrics), which every page shows in the same sidebar.

UI only: every number comes from ``arml_core`` and every figure from ``arml_core.plots``.
"""
from __future__ import annotations

import streamlit as st

from app_pages import _training as training
from app_pages._shared import init_state, sidebar

st.set_page_config(page_title="ARML Explorer", page_icon=":material/shield:", layout="wide")

PAGES = [
    st.Page("app_pages/train.py", title="Train & compare", icon=":material/fitness_center:", default=True),  # served at /
    st.Page("app_pages/boundaries.py", title="Decision boundaries", icon=":material/map:", url_path="boundaries"),
    st.Page("app_pages/curves.py", title="Robustness curves", icon=":material/show_chart:", url_path="curves"),
    st.Page("app_pages/examples.py", title="Adversarial examples", icon=":material/search:", url_path="examples"),
    st.Page("app_pages/pairwise.py", title="Pairwise attacks", icon=":material/group:", url_path="pairwise"),
    st.Page("app_pages/reproduction.py", title="Paper reproduction", icon=":material/table_chart:",
            url_path="reproduction"),
]

init_state()
page = st.navigation(PAGES)
sidebar()  # drawn once, here, for every page
page.run()
training.follow(st.sidebar)  # a run in progress (started on any page) goes on and shows here
