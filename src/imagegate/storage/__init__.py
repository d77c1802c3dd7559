"""Where state lives. `interfaces` holds the Protocols (asset index, quota ledger, blob
store) that everything above uses; backends implement them: today SQLite + local files
(`embedded`). Nothing above this package sees a local path of a blob or a SQL string."""
