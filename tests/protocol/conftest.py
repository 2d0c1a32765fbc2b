"""Protocol tests: commands the test server lacks, answered over the wire by mockupdb with
replies shaped as MongoDB 7/8 documents them (see ../shared/DESIGN.md, "Test bed")."""
