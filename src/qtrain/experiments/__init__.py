"""Paper experiments: Table 1 (:mod:`.table1`) and the whole-poster report (:mod:`.reproduce`)."""
