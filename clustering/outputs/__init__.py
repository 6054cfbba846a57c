"""What people look at: charts, the map, the report and their shared palette."""
