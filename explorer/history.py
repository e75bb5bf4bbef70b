"""The address bar is the app's state: each step of the Explorer's view is a browser history entry.

Back and Forward walk the views a user went through, without reloading the page, and never leave
the app while there is an earlier view of it (as in the Hugging Face Dataset Viewer). The rules:

- A user's step that changes the view (the records shown, categories, search, regex, sort, quality,
  page, a row opened or closed) *pushes* an entry; typing in the search box does not (its Enter or button does).
- Filling the view from the address (page load, a poll that finds the data, Back/Forward) *replaces*
  the entry, so it never adds one of its own.
- Switching tabs pushes: `?tab=<id>` (`?tab=chat`, `?tab=contribute`), and for the Explorer its last view
  (at least `?tab=explorer`).

The server tags the Explorer's link query with the mode (`tag`), and the script in `HEAD` applies it
to the address bar; on Back/Forward the script selects the tab the address names and, for the
Explorer, presses a hidden button whose event restores the view from `location.search`.
"""
from __future__ import annotations

PUSH, REPLACE = "push", "replace"


def tag(query: str, mode: str) -> str:
    """The link query as the page carries it: the mode the address bar takes it in, then the query."""
    return f"{mode}:{query}"


def untag(value: str) -> tuple[str, str]:
    """(mode, query) of a tagged link query; an untagged one (the page's first) replaces."""
    mode, sep, query = (value or "").partition(":")
    return (mode, query) if sep and mode in (PUSH, REPLACE) else (REPLACE, value or "")


# The hidden button the script presses on Back/Forward to an Explorer address (see explorer.tab).
GO_ID = "explorer-history-go"

HEAD = """<script>
(() => {
  // explorer/history.py says what this does and why.
  const tabButton = (id) => document.querySelector(`button[role=tab][data-tab-id="${CSS.escape(id)}"]`);
  let explorerQuery = '?tab=explorer';  // the Explorer's last view, for when its tab is chosen again
  let restoring = false;                // set while Back/Forward selects a tab: that is no new step
  // The tab an address names: its `tab`, else the Explorer's when it has the Explorer's keys, else the first.
  const tabOf = (search) => {
    const params = new URLSearchParams(search);
    if (params.get('tab')) return params.get('tab');
    return ['category', 'q', 'regex', 'sort', 'quality', 'p', 'row', 'shown', 'source'].some((key) => params.has(key))
      ? 'explorer' : 'chat';
  };
  const aboutExplorer = (search) => tabOf(search) === 'explorer';
  const go = (query, mode) => {
    if (location.search === query) return;
    const url = location.pathname + query;
    if (mode === 'push') history.pushState({dolly: query}, '', url);
    else history.replaceState({dolly: query}, '', url);
  };
  window.dollyAddress = {
    // The Explorer's link query changed (tagged "push:" or "replace:" by the server): the URL of the view.
    explorer(value) {
      const cut = value.indexOf(':');
      const tagged = cut > 0 && ['push', 'replace'].includes(value.slice(0, cut));
      const mode = tagged ? value.slice(0, cut) : 'replace';
      const query = tagged ? value.slice(cut + 1) : value;
      explorerQuery = query || '?tab=explorer';
      // A fill from the address only rewrites an Explorer address (the Chat's stays the Chat's).
      if (mode === 'push' || aboutExplorer(location.search)) go(explorerQuery, mode);
      return location.origin + location.pathname + explorerQuery;
    },
  };
  document.addEventListener('click', (event) => {
    if (restoring) return;
    const tab = event.target.closest?.('button[role=tab][data-tab-id]');
    if (tab && tab.getAttribute('aria-selected') !== 'true') {
      go(tab.dataset.tabId === 'explorer' ? explorerQuery : `?tab=${encodeURIComponent(tab.dataset.tabId)}`, 'push');
    } else if (event.target.closest?.('#explorer-try-in-chat, [data-action=try]')) {
      go('?tab=chat', 'push');
    }
  }, true);
  const whenThere = (selector, then) => {
    const found = document.querySelector(selector);
    if (found) return then(found);
    const watch = new MutationObserver(() => {
      const element = document.querySelector(selector);
      if (element) { watch.disconnect(); then(element); }
    });
    watch.observe(document.documentElement, {childList: true, subtree: true});
  };
  // A link to another tab (?tab=contribute) opens it; the server opens the Explorer's and the Chat is first.
  const linked = tabOf(location.search);
  if (linked !== 'chat' && linked !== 'explorer') {
    whenThere(`button[role=tab][data-tab-id="${CSS.escape(linked)}"]`, (button) => {
      restoring = true;
      try { button.click(); } finally { restoring = false; }
    });
  }
  window.addEventListener('popstate', () => {
    const id = tabOf(location.search), explorer = id === 'explorer';
    const tab = tabButton(id);
    if (tab && tab.getAttribute('aria-selected') !== 'true') {
      restoring = true;
      try { tab.click(); } finally { restoring = false; }
    }
    if (explorer) whenThere('#GO_ID', (button) => button.click());
  });
})();
</script>""".replace("GO_ID", GO_ID)
