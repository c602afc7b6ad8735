"""Reading a finished sweep: pandas tables (`tables`), which trials win and by how much
(`statistics`), which axis mattered (`importance`), figures (`plots`) and the HTML page (`html`)."""
