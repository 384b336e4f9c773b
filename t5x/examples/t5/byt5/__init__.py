"""T5X's model gin files of this family at T5X's path (a package, so gin finds them
by module path as it finds T5X's own)."""
