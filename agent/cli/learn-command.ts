export async function learnCommand(_args: string[]): Promise<number> {
  process.stderr.write('runwatch learn: not available yet\n');
  return 2;
}
