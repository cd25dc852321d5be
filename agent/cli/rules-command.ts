export async function rulesCommand(_args: string[]): Promise<number> {
  process.stderr.write('runwatch rules: not available yet\n');
  return 2;
}
